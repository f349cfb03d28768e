-- Accounts, tokens, images, settings.  Times are POSIX seconds (UTC).
CREATE TABLE accounts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    is_admin BOOLEAN NOT NULL DEFAULT 0,
    created REAL NOT NULL
);

CREATE TABLE tokens (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    account TEXT NOT NULL,
    digest TEXT NOT NULL UNIQUE,
    label TEXT NOT NULL DEFAULT '',
    created REAL NOT NULL,
    expires REAL,
    last_used REAL
);
CREATE INDEX tokens_account ON tokens (account);
CREATE INDEX tokens_expires ON tokens (expires);

CREATE TABLE images (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    account TEXT NOT NULL,
    name TEXT NOT NULL,
    stem TEXT NOT NULL,
    mime TEXT NOT NULL,
    size INTEGER NOT NULL,
    width INTEGER NOT NULL,
    height INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    uploaded REAL NOT NULL,
    expires REAL,
    state TEXT NOT NULL,
    deleted REAL,
    retry_at REAL,
    attempts INTEGER NOT NULL DEFAULT 0,
    UNIQUE (account, stem)
);
CREATE UNIQUE INDEX images_account_name ON images (account, name);
CREATE INDEX images_account_uploaded ON images (account, uploaded);
CREATE INDEX images_state_expires ON images (state, expires);

CREATE TABLE settings (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
