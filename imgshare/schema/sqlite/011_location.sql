-- Location metadata in originals (issue 14 item 8).  images.has_location: the stored
-- original carries GPS coordinates (EXIF or XMP), found at upload from the bytes stored.
-- Rows from before this migration were never examined: they read as false (no badge).
-- accounts.strip_location: the account's default for removing location metadata at upload.
ALTER TABLE images ADD COLUMN has_location BOOLEAN NOT NULL DEFAULT 0;
ALTER TABLE accounts ADD COLUMN strip_location BOOLEAN NOT NULL DEFAULT 0;
