-- The gallery's search and its sort by size (the /images page and GET /api/v1/images).
-- Like images_listing (009), each index holds everything its queries read, so a page
-- skip and a count are index-only scans (the visibility map keeps their visits to
-- the heap rare once autovacuum has seen the table).
-- images_search: images_listing's key and order, carrying the two names a search
-- looks in (file name, original name).  A substring search (ILIKE '%…%') cannot seek
-- in a B-tree, so it scans the account's range of this index, testing the pattern on
-- its entries.  (pg_trgm, trusted and shipped with PostgreSQL 15, was considered: a
-- trigram index finds a rare word fast but not a common one, and a search must count
-- every match anyway; the scan below stays under the gallery's budget at 100 000
-- images of one account, and needs no extension, so no CREATE privilege on the database.)
CREATE INDEX images_search ON images (account, state, uploaded DESC, id DESC, expires) INCLUDE (name, original_name);
-- images_by_size: sort=largest (size DESC, id DESC), walked from either end as the
-- newest-first listing is; it carries the names too, so a search sorted by size
-- needs no other index.
CREATE INDEX images_by_size ON images (account, state, size DESC, id DESC, expires) INCLUDE (name, original_name);
