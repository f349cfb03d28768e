-- The gallery's search and its sort by size (the /images page and GET /api/v1/images).
-- Like images_listing (009), each index holds everything its queries read, so a page
-- skip and a count walk index entries only, never rows.
-- images_search: images_listing's columns and order, then the two names a search
-- looks in (file name, original name).  A substring search (LIKE '%…%') cannot seek,
-- so it scans the account's range of this index, evaluating the pattern on its
-- entries; no row is read but the page's own.
CREATE INDEX images_search ON images (account, state, uploaded DESC, id DESC, expires, name, original_name);
-- images_by_size: sort=largest (size DESC, id DESC), walked from either end as the
-- newest-first listing is; it carries the names too, so a search sorted by size
-- needs no other index.
CREATE INDEX images_by_size ON images (account, state, size DESC, id DESC, expires, name, original_name);
-- images_search has images_listing's key and order and more: the listing reads it
-- instead (one index fewer to keep on every upload and delete).
DROP INDEX images_listing;
