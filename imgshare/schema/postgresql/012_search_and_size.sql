-- The gallery's search and its sort by size (the /images page and GET /api/v1/images).
-- search_key: the file name and the original name, lower case, one line each (a
-- search holds no control character, so it never matches across the two).  A search
-- is "search_key LIKE lower('%…%')": the names are lowered once, when a row is
-- written, not for every row a search reads (ILIKE lowers both sides of every
-- comparison: four times the work, measured at 100 000 images).
ALTER TABLE images ADD COLUMN search_key TEXT GENERATED ALWAYS AS (lower(name || E'\n' || original_name)) STORED;
-- images_search: images_listing's key and order, carrying search_key, so a search
-- that matches many images reads its page from this index in order, an index-only
-- scan that stops after the page.
CREATE INDEX images_search ON images (account, state, uploaded DESC, id DESC, expires) INCLUDE (search_key);
-- images_by_size: sort=largest (size DESC, id DESC), walked from either end as the
-- newest-first listing is (its count and skip are index-only scans); it carries
-- search_key too, for a search sorted by size.
CREATE INDEX images_by_size ON images (account, state, size DESC, id DESC, expires) INCLUDE (search_key);
-- A B-tree cannot seek to a substring, a trigram index can: for a search of three
-- characters or more that few images match, it gives the matching rows directly, so
-- its count and page read only those rows instead of every image of the account; the
-- planner keeps the scans above for a search that matches many.
-- pg_trgm is a trusted extension shipped with PostgreSQL: a role with the CREATE
-- privilege on the database may create it (see docs/deploy.md for one without).
CREATE EXTENSION IF NOT EXISTS pg_trgm;
CREATE INDEX images_search_trigrams ON images USING gin (search_key gin_trgm_ops);
-- images_search has images_listing's key and order and more: the listing reads it
-- instead (one index fewer to keep on every upload and delete).
DROP INDEX images_listing;
