-- Per-image secret delete links (PEERS section 3) and the client's own file name.
-- delete_digest is the SHA-256 (hex) of the link's secret, never the secret; NULL for
-- images uploaded before this migration, which have no delete link.
ALTER TABLE images ADD COLUMN original_name TEXT NOT NULL DEFAULT '';
ALTER TABLE images ADD COLUMN delete_digest TEXT;
