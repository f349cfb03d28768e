-- What an upload asked for as its lifetime, so the gallery can say when a choice was
-- shortened (or lengthened) and why: 'never', seconds (a decimal number), or NULL
-- (nothing usable was asked, so the size's default; and every image from before).
ALTER TABLE images ADD COLUMN asked_expire TEXT;
