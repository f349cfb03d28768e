-- Derived-file jobs (one per image) and the derived files made so far.
-- Several processes claim jobs with SELECT ... FOR UPDATE SKIP LOCKED.
CREATE TABLE jobs (
    image_id BIGINT PRIMARY KEY,
    state TEXT NOT NULL,
    priority INTEGER NOT NULL DEFAULT 0,
    available_at DOUBLE PRECISION NOT NULL,
    claimed_at DOUBLE PRECISION,
    claimed_by TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    created DOUBLE PRECISION NOT NULL
);
CREATE INDEX jobs_ready ON jobs (state, priority, available_at);

CREATE TABLE variants (
    image_id BIGINT NOT NULL,
    variant TEXT NOT NULL,
    size BIGINT NOT NULL,
    width INTEGER NOT NULL,
    height INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    created DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (image_id, variant)
);
