"""What a shared rate-limit check costs on PostgreSQL.

    python bench/limits.py [--checks 5000] [--concurrency 8]

Starts a throw-away PostgreSQL cluster on loopback with the durability a
production server has (fsync, synchronous_commit and full_page_writes on;
``IMGSHARE_TEST_POSTGRES`` names another server instead), migrates a fresh
database and times, through IMGSHARE's own pool on the reactor:

- ``SELECT 1`` as one statement: one round trip, the floor;
- ``db.take_token`` as the server runs it (one statement, no BEGIN/COMMIT,
  UNLOGGED table): the cost of one check;
- the same statement inside BEGIN ... COMMIT, and on a logged copy of the table:
  what the two choices save;
- ``MemoryLimits.take``, the in-process store of SQLite servers;

each as the latency of one check at a time (median and 99th percentile; the
calls take turns, so noise on the machine costs each alike), then
as checks per second with ``--concurrency`` checks in flight over as many keys
(or all on one hot key).  Ratios are against the floor.
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from twisted.internet import task  # noqa: E402
from twisted.internet.defer import Deferred, gatherResults  # noqa: E402

from imgshare import db  # noqa: E402
from imgshare.config import RateLimit  # noqa: E402
from imgshare.plugins.postgres import PostgresDatabase  # noqa: E402
from imgshare.ratelimit import MemoryLimits, bucket_params  # noqa: E402
from tests import backends  # noqa: E402

LIMIT = RateLimit(1_000_000, 1.0)  # never refuses: every check writes


class DurablePostgres(backends.LocalPostgres):
    """The test cluster, but with a production server's durability settings."""

    def start_server(self) -> None:
        options = (f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.folder} -c fsync=on "
                   "-c synchronous_commit=on -c full_page_writes=on -c max_connections=50")
        self._run(f"{self.bin}/pg_ctl", "-D", self.data, "-l", os.path.join(self.folder, "log"),
                  "-o", options, "-w", "-t", "60", "start")


@db.one_statement
async def select_one(tx: db.Tx) -> None:
    await tx.execute("SELECT 1")


async def take_in_transaction(tx: db.Tx, *args: object) -> object:
    """``db.take_token`` without its ``one_statement`` mark: BEGIN, the statement, COMMIT."""
    return await db.take_token(tx, *args)


@db.one_statement
async def take_logged(tx: db.Tx, key: str, now: float, interval: float, tolerance: float) -> object:
    rows = await tx.execute(
        "INSERT INTO rate_buckets_logged (key, tat, taken) VALUES (?, ?, 1) ON CONFLICT (key) DO UPDATE SET "
        "taken = CASE WHEN rate_buckets_logged.tat <= ? THEN 1 ELSE 0 END, "
        "tat = CASE WHEN rate_buckets_logged.tat <= ? THEN GREATEST(rate_buckets_logged.tat, ?) + ? "
        "ELSE rate_buckets_logged.tat END RETURNING taken, tat",
        (key, now + interval, now + tolerance, now + tolerance, now, interval),
    )
    return rows[0]


async def make_logged_table(tx: db.Tx) -> None:
    await tx.execute("CREATE TABLE rate_buckets_logged (key TEXT PRIMARY KEY, tat DOUBLE PRECISION NOT NULL, "
                     "taken SMALLINT NOT NULL DEFAULT 1)")


def check_args(i: int, hot: bool = False) -> tuple:
    interval, tolerance = bucket_params(LIMIT)
    key = "api:198.51.100.1" if hot else f"api:198.51.{i % 250}.{i % 7}"
    return key, time.time(), interval, tolerance


async def latencies(calls: dict, n: int) -> dict[str, list[float]]:
    """The time of each of ``n`` checks of every call, taken in turns (so a noisy
    moment of the machine costs every call alike)."""
    found: dict[str, list[float]] = {name: [] for name in calls}
    for i in range(n):
        for name, call in calls.items():
            start = time.perf_counter()
            await call(i)
            found[name].append(time.perf_counter() - start)
    return found


async def throughput(call, n: int, concurrency: int) -> float:
    async def loop(worker: int) -> None:
        for i in range(worker, n, concurrency):
            await call(i)

    start = time.perf_counter()
    await gatherResults([Deferred.fromCoroutine(loop(w)) for w in range(concurrency)])
    return n / (time.perf_counter() - start)


def report(name: str, times: list[float], floor: float) -> None:
    times = sorted(times)
    median = statistics.median(times)
    p99 = times[int(len(times) * 0.99) - 1]
    print(f"  {name:<44} median {median * 1000:6.3f} ms  p99 {p99 * 1000:6.3f} ms  ({median / floor:4.2f}x floor)")


async def main(reactor, args: argparse.Namespace) -> None:
    server = None
    dsn = os.environ.get(backends.POSTGRES_ENV)
    if not dsn:
        server = DurablePostgres().start()
        dsn = server.dsn
        os.environ[backends.POSTGRES_ENV] = dsn  # tests.backends' admin connection goes there
    try:
        dbname = "imgshare_bench_" + secrets.token_hex(4)
        backends._admin_sql(f"CREATE DATABASE {dbname}")
        database = PostgresDatabase(backends.with_database(dsn, dbname) + f"?pool_size={args.concurrency}", reactor)
        await database.start()
        await database.run(make_logged_table)
        memory = MemoryLimits(reactor)
        calls = {
            "SELECT 1, one statement (the floor)": lambda i: database.run(select_one),
            "take_token, one statement (the check)": lambda i: database.run(db.take_token, *check_args(i)),
            "take_token inside BEGIN/COMMIT": lambda i: database.run(take_in_transaction, *check_args(i)),
            "take_token, one statement, logged table": lambda i: database.run(take_logged, *check_args(i)),
            "MemoryLimits.take (SQLite servers)": lambda i: Deferred.fromCoroutine(
                memory.take(check_args(i)[0], LIMIT)),
        }
        await latencies(calls, 200)  # warm up: connections, plans, rows
        print(f"PostgreSQL on loopback ({'durable, started here' if server else dsn}); "
              f"{args.checks} checks each")
        print("one check at a time:")
        results = await latencies(calls, args.checks)
        floor = statistics.median(results["SELECT 1, one statement (the floor)"])
        for name, times in results.items():
            report(name, times, floor)
        print(f"checks per second, {args.concurrency} in flight:")
        for name in ("SELECT 1, one statement (the floor)", "take_token, one statement (the check)",
                     "take_token inside BEGIN/COMMIT", "take_token, one statement, logged table"):
            rate = await throughput(calls[name], args.checks, args.concurrency)
            print(f"  {name:<44} {rate:8.0f}/s")
        hot = await throughput(lambda i: database.run(db.take_token, *check_args(i, hot=True)),
                               args.checks, args.concurrency)
        print(f"  {'take_token, all on one hot key':<44} {hot:8.0f}/s")
        await database.stop()
        backends._admin_sql(f"DROP DATABASE {dbname} WITH (FORCE)")
    finally:
        if server is not None:
            server.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checks", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=8)
    task.react(main, [parser.parse_args()])
