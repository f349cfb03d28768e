-- Kept-name clash suffixes: db.reserve_image finds the highest <stem>_N of an
-- account with a range scan over stems in byte order (COLLATE "C"), whatever the
-- database's collation (a linguistic one may ignore the "_").
CREATE INDEX images_account_stem_bytes ON images (account, stem COLLATE "C");
