-- The caller's listing (GET /api/v1/images, the /images page): newest first, only
-- live and unexpired images, by page number.  A page is an OFFSET, so the skip must
-- walk index entries only: this index has the order (uploaded DESC, id DESC) after
-- the equality columns and carries expires, so the ids of a page and the count of
-- live images are read from it alone (a covering index: an index-only scan, whose visits to the heap
-- the visibility map keeps rare once autovacuum has seen the table); the page's rows
-- are then fetched by id.
-- It serves everything images_account_uploaded did (its leading column is account).
CREATE INDEX images_listing ON images (account, state, uploaded DESC, id DESC, expires);
DROP INDEX images_account_uploaded;
