-- Presigned uploads (PEERS section 2): one row per grant, from presign until it is
-- completed and its staged bytes removed, or swept after it expired.  The row is
-- where every process finds the grant; the bytes a PUT brought are staged in
-- storage under _staging/<id>.<attempt> (never a key an image can have).
-- completion_digest is the SHA-256 (hex) of the completion token, never the token.
-- state: open (no bytes yet), staged (bytes in storage), completing (a complete
-- holds claim until claim_until), spent (its image is committed, or its bytes
-- were refused: only the staged objects and the row remain to be removed).
CREATE TABLE upload_grants (
    id TEXT PRIMARY KEY,
    account TEXT NOT NULL,
    completion_digest TEXT NOT NULL UNIQUE,
    filename TEXT NOT NULL,
    size_limit INTEGER NOT NULL,
    keep_name BOOLEAN NOT NULL DEFAULT 0,
    name TEXT,
    expire TEXT,
    created REAL NOT NULL,
    expires REAL NOT NULL,
    state TEXT NOT NULL,
    put_attempts INTEGER NOT NULL DEFAULT 0,
    staged_attempt INTEGER,
    staged_size INTEGER,
    staged_sha256 TEXT,
    claim TEXT,
    claim_until REAL
);
CREATE INDEX upload_grants_expires ON upload_grants (expires);
CREATE INDEX upload_grants_state ON upload_grants (state);
