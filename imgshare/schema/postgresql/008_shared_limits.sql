-- Rate limits, login throttles and the img_gather.php error cache, shared by every
-- process on this database.  Nothing here is worth keeping through a crash, so the
-- tables are UNLOGGED (no WAL: a check costs one cheap write; after a crash of the
-- server they start empty, which only refills everyone's buckets).
--
-- A token bucket is one row: ``tat`` is the time at which the bucket is full again
-- (the theoretical arrival time of the generic cell rate algorithm); a row whose
-- ``tat`` has passed holds a full bucket and is pruned by the expiry service.
-- ``taken`` says whether the last check took a request (1) or was refused (0).
-- Keys name the limit and the client (``api:192.0.2.1``, ``api:token:12``), never
-- a secret.
CREATE UNLOGGED TABLE rate_buckets (
    key TEXT PRIMARY KEY,
    tat DOUBLE PRECISION NOT NULL,
    taken SMALLINT NOT NULL DEFAULT 1
);
-- Client address groups that logged in to an account (the login throttle lets
-- them by when the account's bucket for strangers is spent).
CREATE UNLOGGED TABLE login_known (
    account TEXT NOT NULL,
    address TEXT NOT NULL,
    seen DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (account, address)
);
-- img_gather.php failures, remembered per URL (by the SHA-256 of the normalised
-- URL, which may carry a third party's credentials) until ``expires``.
CREATE UNLOGGED TABLE gather_errors (
    digest TEXT PRIMARY KEY,
    expires DOUBLE PRECISION NOT NULL,
    kind TEXT NOT NULL,
    status INTEGER NOT NULL,
    message TEXT NOT NULL
);
