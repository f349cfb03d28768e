-- The gallery's search and its sort by size (the /images page and GET /api/v1/images).
-- images_search: images_listing's key and order, carrying the two names a search
-- looks in (file name, original name), so a search that matches many images reads
-- its page from this index in order, an index-only scan that stops after the page.
CREATE INDEX images_search ON images (account, state, uploaded DESC, id DESC, expires) INCLUDE (name, original_name);
-- images_by_size: sort=largest (size DESC, id DESC), walked from either end as the
-- newest-first listing is (its count and skip are index-only scans); it carries the
-- names too, for a search sorted by size.
CREATE INDEX images_by_size ON images (account, state, size DESC, id DESC, expires) INCLUDE (name, original_name);
-- A search is "name ILIKE '%…%' OR original_name ILIKE '%…%'": a B-tree cannot seek
-- to a substring, a trigram index can.  For a search of three characters or more that
-- few images match, the two indexes give the matching rows directly (a bitmap of each,
-- OR-ed), so its count and page read only those rows instead of every image of the
-- account; the planner keeps the scans above for a search that matches many.
-- pg_trgm is a trusted extension shipped with PostgreSQL: a role with the CREATE
-- privilege on the database may create it (see docs/deploy.md for one without).
CREATE EXTENSION IF NOT EXISTS pg_trgm;
CREATE INDEX images_name_trigrams ON images USING gin (name gin_trgm_ops);
CREATE INDEX images_original_name_trigrams ON images USING gin (original_name gin_trgm_ops);
-- images_search has images_listing's key and order and more: the listing reads it
-- instead (one index fewer to keep on every upload and delete).
DROP INDEX images_listing;
