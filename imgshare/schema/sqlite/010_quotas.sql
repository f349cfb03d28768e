-- Storage quotas and per-account usage.  image_count and image_bytes count the
-- account's images that hold storage: reserved ("uploading": an upload in flight
-- holds its share, so racing uploads cannot pass a quota) and live (expired ones
-- too, until their purge).  image_bytes sums the originals' sizes (derived copies
-- are the host's overhead).  db.reserve_image adds to them in the reservation's
-- transaction; discard_image, abandon_upload, mark_deleted and remove_image give
-- back what they take away.  quota_bytes and quota_images are the account's limits;
-- NULL is no limit.  The counters start from the rows there are.
ALTER TABLE accounts ADD COLUMN image_count INTEGER NOT NULL DEFAULT 0;
ALTER TABLE accounts ADD COLUMN image_bytes INTEGER NOT NULL DEFAULT 0;
ALTER TABLE accounts ADD COLUMN quota_bytes INTEGER;
ALTER TABLE accounts ADD COLUMN quota_images INTEGER;
UPDATE accounts SET
    image_count = (SELECT COUNT(*) FROM images WHERE images.account = accounts.name AND images.state <> 'deleted'),
    image_bytes = (SELECT COALESCE(SUM(size), 0) FROM images
                   WHERE images.account = accounts.name AND images.state <> 'deleted');
