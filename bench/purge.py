"""The expiry service's purge at scale: N images of one account, a share of them
expired, on SQLite or PostgreSQL and local files (objects on disk, as the server
stores them).

    python bench/purge.py [--images 100000] [--expired 10000] [--backend sqlite|postgresql]

PostgreSQL is a throw-away cluster on loopback (tests/backends.py, as scripts/test
starts it: fsync off, so the commits' disk flushes are not in the figure).

The rows are written straight into the database (one bulk INSERT, as
``bench/list_images.py`` does) and an original per expired image is written to the
storage folder.  Then ``expire_once`` passes run on the reactor with the server's
own thread pools (``compose.build``, as ``twistd imgshare`` builds them, its start-up
objects frozen as the service freezes them) until every
expired image is gone, while a 5 ms ``LoopingCall`` measures how late the reactor
answers: the longest stall is what a request arriving meanwhile would have waited.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from twisted.internet import defer, reactor, task  # noqa: E402

from imgshare import compose, db, memory  # noqa: E402
from imgshare.expiry import expire_once  # noqa: E402
from imgshare.plugins.localfiles import LocalStorage  # noqa: E402
from imgshare.plugins.sqlite import SqliteDatabase  # noqa: E402
from imgshare.testing import test_config  # noqa: E402
from imgshare.threads import ThreadPoolService  # noqa: E402

ACCOUNT = "bench"


#: The fill on PostgreSQL: the same rows as ``fill`` makes on SQLite.
PG_FILL = (
    "INSERT INTO images (account, name, stem, mime, size, width, height, sha256, uploaded, expires, state) "
    "SELECT %(account)s, '20260214_p' || i || '.jpg', '20260214_p' || i, 'image/jpeg', 1000, 40, 30, "
    "'ab', %(now)s - %(images)s + i, CASE WHEN i < %(expired)s THEN %(now)s - 1 ELSE NULL END, 'live' "
    "FROM generate_series(0, %(images)s - 1) AS s(i)"
)


def fill_postgres(dsn: str, images: int, expired: int, now: float) -> None:
    import psycopg2

    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    with conn.cursor() as cursor:
        cursor.execute("SET synchronous_commit = on")
        cursor.execute(PG_FILL, {"account": ACCOUNT, "now": now, "images": images, "expired": expired})
        cursor.execute("UPDATE accounts SET image_count = %s, image_bytes = %s WHERE name = %s",
                       (images, images * 1000, ACCOUNT))
        cursor.execute("VACUUM ANALYZE images")
        cursor.execute("CHECKPOINT")
    conn.close()


def fill(path: str, images: int, expired: int, now: float) -> None:
    import sqlite3

    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("BEGIN")
    conn.execute(
        "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i + 1 < ?) "
        "INSERT INTO images (account, name, stem, mime, size, width, height, sha256, uploaded, expires, state) "
        "SELECT ?, '20260214_p' || i || '.jpg', '20260214_p' || i, 'image/jpeg', 1000, 40, 30, "
        "'ab', ? - ? + i, CASE WHEN i < ? THEN ? - 1 ELSE NULL END, 'live' FROM n",
        (images, ACCOUNT, now, images, expired, now),
    )
    conn.execute("UPDATE accounts SET image_count = ?, image_bytes = ? WHERE name = ?",
                 (images, images * 1000, ACCOUNT))
    conn.execute("COMMIT")
    conn.execute("ANALYZE")
    conn.close()


async def run(args: argparse.Namespace) -> None:
    folder = tempfile.mkdtemp(prefix="imgshare-purge-")
    postgres = None
    try:
        config = test_config(folder)
        io = ThreadPoolService(reactor, "io", 4)
        images = ThreadPoolService(reactor, "images", 1)
        io.startService()
        images.startService()
        if args.backend == "postgresql":
            from imgshare.plugins.postgres import PostgresDatabase
            from tests.backends import LocalPostgres

            postgres = LocalPostgres().start()

            def open_database():
                return PostgresDatabase(postgres.dsn, reactor)
        else:
            def open_database():
                return SqliteDatabase(f"sqlite://{os.path.join(folder, 'imgshare.sqlite3')}", reactor)
        database = open_database()
        await database.start()
        await database.run(db.create_account, ACCOUNT, "h", False, 0.0)
        await database.stop()
        now = time.time()
        if postgres is not None:
            fill_postgres(postgres.dsn, args.images, args.expired, now)
        else:
            fill(os.path.join(folder, "imgshare.sqlite3"), args.images, args.expired, now)
        store = os.path.join(folder, "files", ACCOUNT)
        os.makedirs(store)
        for i in range(args.expired):
            with open(os.path.join(store, f"20260214_p{i}.jpg"), "wb") as f:
                f.write(b"x" * 1000)
        database = open_database()
        await database.start()
        storage = LocalStorage(f"file://{folder}/files", os.path.join(folder, "files"), io.runner)
        parts = compose.build(config, reactor, database, storage, io.runner, images.runner)
        memory.freeze_startup_objects()  # as the service does once it listens
        worst, last = [0.0], [time.perf_counter()]

        def tick() -> None:
            at = time.perf_counter()
            worst[0] = max(worst[0], at - last[0] - 0.005)
            last[0] = at

        ticker = task.LoopingCall(tick)
        ticker.start(0.005)
        start = time.perf_counter()
        purged = passes = 0
        while purged < args.expired:
            purged += (await expire_once(parts.database, parts.library, time.time()))[1]
            passes += 1
        seconds = time.perf_counter() - start
        ticker.stop()
        left = os.listdir(store)
        backend = "PostgreSQL" if postgres is not None else "SQLite"
        print(f"{args.expired} expired of {args.images} images ({backend}, local files): purged in {seconds:.2f} s "
              f"({seconds / args.expired * 1000:.2f} ms an image, {passes} passes); longest reactor stall "
              f"{worst[0] * 1000:.1f} ms; objects left {len(left)}")
        await database.stop()
        io.stopService()
        images.stopService()
    finally:
        if postgres is not None:
            postgres.stop()
        shutil.rmtree(folder, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=100_000)
    parser.add_argument("--expired", type=int, default=10_000)
    parser.add_argument("--backend", choices=("sqlite", "postgresql"), default="sqlite")
    args = parser.parse_args()
    task.react(lambda _: defer.ensureDeferred(run(args)))


if __name__ == "__main__":
    main()
