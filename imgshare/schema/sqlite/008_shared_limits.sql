-- Rate limits, login throttles and the img_gather.php error cache, shared by every
-- process on this database (the PostgreSQL schema explains the columns).  A server
-- on SQLite keeps these in its memory; the tables exist so that both dialects have
-- the same schema and pass the same database contract.
CREATE TABLE rate_buckets (
    key TEXT PRIMARY KEY,
    tat REAL NOT NULL,
    taken INTEGER NOT NULL DEFAULT 1
);
CREATE TABLE login_known (
    account TEXT NOT NULL,
    address TEXT NOT NULL,
    seen REAL NOT NULL,
    PRIMARY KEY (account, address)
);
CREATE TABLE gather_errors (
    digest TEXT PRIMARY KEY,
    expires REAL NOT NULL,
    kind TEXT NOT NULL,
    status INTEGER NOT NULL,
    message TEXT NOT NULL
);
