-- Leases for derived-file jobs.  A worker holds a running job until lease_until
-- and renews the lease while it works; once it runs out (the worker died or hung)
-- the job may be claimed again.  outages counts the claims that ended with the
-- worker giving the job back because storage or the database was unavailable:
-- those do not count against the attempts cap.  Rows running at the upgrade keep
-- the old rule (free 120 s after claimed_at) through a NULL lease.
ALTER TABLE jobs ADD COLUMN lease_until REAL;
ALTER TABLE jobs ADD COLUMN outages INTEGER NOT NULL DEFAULT 0;
