-- Derived-file jobs (one per image) and the derived files made so far.
CREATE TABLE jobs (
    image_id INTEGER PRIMARY KEY,
    state TEXT NOT NULL,
    priority INTEGER NOT NULL DEFAULT 0,
    available_at REAL NOT NULL,
    claimed_at REAL,
    claimed_by TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    created REAL NOT NULL
);
CREATE INDEX jobs_ready ON jobs (state, priority, available_at);

CREATE TABLE variants (
    image_id INTEGER NOT NULL,
    variant TEXT NOT NULL,
    size INTEGER NOT NULL,
    width INTEGER NOT NULL,
    height INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    created REAL NOT NULL,
    PRIMARY KEY (image_id, variant)
);
