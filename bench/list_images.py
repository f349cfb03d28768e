"""Listing the caller's images (GET /api/v1/images) at 100 000 images, on SQLite and PostgreSQL.

    python bench/list_images.py [--images 100000] [--requests 200] [--backend sqlite|postgresql|both]

For each backend: a real ``twistd imgshare`` (PostgreSQL: a throw-away cluster on
loopback, as the tests start it), then ``--images`` served images of one account
written straight into its database in one bulk INSERT (plus deleted, expired and
another account's rows that must not be listed) and the accounts' usage counters
filled from them (migration 010's backfill), then ANALYZE (and VACUUM on
PostgreSQL, as autovacuum would after a bulk load, so index-only scans skip the heap).
It measures ``GET /api/v1/images?page=1&limit=24``, ``page=2084`` (the middle, the
farthest from either end of the index) and ``page=4000`` (offset 95 976)
through the server, serially on one keep-alive connection, and reports median and
p95 in ms; the same two statements straight on the database; the baseline, the
listing query as it was before migration 009 (rows fetched by a plain OFFSET on the
table); and the query plans (EXPLAIN) of the statements the server runs.

The server (and PostgreSQL) run on CPU 0, this load on CPU 1 (``sched_setaffinity``,
inherited by the child processes), when the machine has two CPUs or more.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import sqlite3
import statistics
import time
from typing import Any

from common import Imgshare

from imgshare import db
from imgshare.domain.records import DELETED, LIVE

ACCOUNT = "bench"
OTHER = "other"
T0 = 1_771_061_400.0
LIMIT = 24
#: The first page, the worst (the middle: the farthest from either end), and a deep one.
PAGES = (1, 2084, 4000)


#: The CPUs this process may use, as it started.
CPUS = sorted(os.sched_getaffinity(0))


def pin(index: int) -> None:
    """Run this process, and what it starts from now on, on its ``index``-th CPU
    (nothing with a single CPU)."""
    if len(CPUS) > 1:
        os.sched_setaffinity(0, {CPUS[index % len(CPUS)]})


class Captured:
    """A Tx that records the statements an operation runs (for EXPLAIN and for timing
    them straight on the database), answering the count with ``total``."""

    share_lock = update_lock = skip_locked = ""
    least = "MIN"
    byte_order = ""
    search_key = ""

    def __init__(self, total: int):
        self.total = total
        self.statements: list[tuple[str, tuple]] = []

    async def execute(self, sql: str, params: Any = ()) -> list[tuple]:
        self.statements.append((sql, tuple(params)))
        return [(self.total,)] if "COUNT(*)" in sql else []


def listing_statements(page: int, now: float, total: int) -> list[tuple[str, tuple]]:
    """The statements ``db.list_images_page`` runs for ``page`` (count, then page)."""
    tx = Captured(total)
    coroutine = db.list_images_page(tx, ACCOUNT, now, (page - 1) * LIMIT, LIMIT)
    try:
        coroutine.send(None)
    except StopIteration:
        pass
    return tx.statements


def baseline_statement(page: int, now: float) -> tuple[str, tuple]:
    """The listing as it was before migration 009: rows read by a plain OFFSET."""
    columns = ", ".join(db._IMAGE.columns)
    return (f"SELECT {columns} FROM images WHERE account = ? AND state = ? "
            "AND (expires IS NULL OR expires > ?) ORDER BY uploaded DESC, id DESC LIMIT ? OFFSET ?",
            (ACCOUNT, LIVE, now, LIMIT, (page - 1) * LIMIT))


def fill_sql(images: int, already: int = 0, dead: int = 50) -> list[tuple[str, tuple]]:
    """Bulk INSERTs (one statement each) of the rows: ``images`` served images of
    ``ACCOUNT`` (every fifth with a far expiry, every 50th sharing its predecessor's
    upload time), 2 % deleted and 2 % expired ones of it (one in ``dead`` each), and 20 %
    as many of ``OTHER``;
    with ``already``, only the rows an account of ``already`` images lacks (so an
    account grows from one size to the next).  ``{series}`` is the dialect's integer
    series over column ``i``; each statement's parameters end with the series' first
    and last values."""
    columns = ("account, name, stem, mime, size, width, height, sha256, uploaded, expires, state, "
               "original_name, delete_digest")

    def rows(account: str, prefix: str, share: int, state: str, expires: str, start: float) -> tuple[str, tuple]:
        uploaded = f"{start} + (i - (CASE WHEN i % 50 = 0 THEN 1 ELSE 0 END))"
        return (f"INSERT INTO images ({columns}) SELECT ?, '20260214_{prefix}' || i || '.jpg', "
                f"'20260214_{prefix}' || i, 'image/jpeg', 100000 + i, 4000, 3000, "
                f"'{'ab' * 32}', {uploaded}, {expires}, ?, 'photo' || i || '.jpg', NULL FROM {{series}}",
                (account, state, already // share + 1, images // share))

    far = T0 + 10 * 365 * 86400
    return [
        rows(ACCOUNT, "", 1, LIVE, f"CASE WHEN i % 5 = 0 THEN {far} ELSE NULL END", T0),
        rows(ACCOUNT, "d", dead, DELETED, "NULL", T0 + 0.5),
        rows(ACCOUNT, "x", dead, LIVE, f"{T0 - 1}", T0 - 86400 + 0.25),
        rows(OTHER, "o", 5, LIVE, "NULL", T0 + 0.75),
    ]


def usage_backfill(dialect: str) -> str:
    """Migration 010's statement filling the accounts' usage counters from their rows (the
    listing's total reads them, and the bulk INSERTs bypass ``db.reserve_image``)."""
    script = dict(db.schema_files(dialect))[10]
    return next(s for s in db.split_statements(script) if s.startswith("UPDATE")).rstrip(";")


def psycopg_sql(sql: str) -> str:
    """``sql`` with psycopg2's placeholders (and its ``%`` escaped)."""
    return sql.replace("%", "%%").replace("?", "%s")


class SqliteSide:
    name = "SQLite"

    def __init__(self) -> None:
        self.server = Imgshare()
        self.path = os.path.join(self.server.data, "imgshare.sqlite3")
        self.conn = sqlite3.connect(self.path, isolation_level=None)

    def fill(self, images: int, already: int = 0, dead: int = 50) -> None:
        """The rows of ``fill_sql`` in one transaction, the usage counters, ANALYZE."""
        self.conn.execute("BEGIN IMMEDIATE")
        for sql, (account, state, first, last) in fill_sql(images, already, dead):
            series = (f"(WITH RECURSIVE s(i) AS (SELECT {first} UNION ALL SELECT i + 1 FROM s WHERE i < {last}) "
                      "SELECT i FROM s)")
            if first <= last:
                self.conn.execute(sql.format(series=series), (account, state))
        self.conn.execute(usage_backfill("sqlite"))
        self.conn.execute("COMMIT")
        self.conn.execute("ANALYZE")

    def query(self, sql: str, params: tuple) -> list:
        return self.conn.execute(sql, params).fetchall()

    def explain(self, sql: str, params: tuple) -> str:
        return "\n".join(f"  {row[-1]}" for row in self.conn.execute("EXPLAIN QUERY PLAN " + sql, params))

    def stop(self) -> None:
        self.conn.close()
        self.server.stop()


class PostgresSide:
    name = "PostgreSQL"

    def __init__(self) -> None:
        import psycopg2

        from tests.backends import LocalPostgres

        self.pg = LocalPostgres().start()
        try:
            self.server = Imgshare("--db", self.pg.dsn, env={"IMGSHARE_DB": self.pg.dsn})
        except Exception:
            self.pg.stop()
            raise
        self.conn = psycopg2.connect(self.pg.dsn)
        self.conn.autocommit = True

    def fill(self, images: int, already: int = 0, dead: int = 50) -> None:
        """The rows of ``fill_sql`` (generated on the server: nothing crosses the wire), the
        usage counters, VACUUM ANALYZE."""
        with self.conn.cursor() as cursor:
            # The test cluster commits asynchronously; VACUUM can mark a page all-visible
            # only once its rows' commits are flushed, so these commit synchronously.
            cursor.execute("SET synchronous_commit = on")
            for sql, (account, state, first, last) in fill_sql(images, already, dead):
                series = f"generate_series({first}, {last}) AS s(i)"
                cursor.execute(psycopg_sql(sql.format(series=series)), (account, state))
            cursor.execute(psycopg_sql(usage_backfill("postgresql")))
            cursor.execute("VACUUM ANALYZE images")
            # Write the fill's pages out now: the checkpointer would otherwise spread that
            # over the next minutes, under the measurements (a 1 M fill: ~20 % of /img/).
            cursor.execute("CHECKPOINT")

    def query(self, sql: str, params: tuple) -> list:
        with self.conn.cursor() as cursor:
            cursor.execute(psycopg_sql(sql), params)
            return cursor.fetchall()

    def explain(self, sql: str, params: tuple) -> str:
        rows = self.query("EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) " + sql, params)
        return "\n".join(f"  {row[0]}" for row in rows)

    def stop(self) -> None:
        self.conn.close()
        try:
            self.server.stop()
        finally:
            self.pg.stop()


def summary(times: list[float]) -> str:
    ms = sorted(t * 1000 for t in times)
    p95 = ms[min(len(ms) - 1, int(len(ms) * 0.95))]
    return f"median {statistics.median(ms):7.2f} ms  p95 {p95:7.2f} ms"


def timed(job: Any, repeat: int) -> list[float]:
    for _ in range(max(3, repeat // 10)):  # warm up
        job()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        job()
        times.append(time.perf_counter() - start)
    return times


def through_server(server: Imgshare, page: int, repeat: int, images: int) -> list[float]:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    path = f"/api/v1/images?page={page}&limit={LIMIT}"
    headers = {"Authorization": f"Bearer {server.token}"}

    def job() -> None:
        conn.request("GET", path, headers=headers)
        response = conn.getresponse()
        body = response.read()
        assert response.status == 200, body[:200]
        answer = json.loads(body)
        assert answer["total"] == images and len(answer["images"]) == LIMIT, (answer["total"], len(answer["images"]))

    try:
        return timed(job, repeat)
    finally:
        conn.close()


def run_statements(side: Any, statements: list[tuple[str, tuple]]) -> None:
    for sql, params in statements:
        side.query(sql, params)


def measure_page(side: Any, page: int, now: float, args: argparse.Namespace) -> None:
    """One page through the server, its statements straight on the database, and the baseline."""
    statements = listing_statements(page, now, args.images)
    baseline = [statements[0], baseline_statement(page, now)]  # the same count, the old page query
    http_times = through_server(side.server, page, args.requests, args.images)
    direct = timed(lambda: run_statements(side, statements), args.requests)
    base = timed(lambda: run_statements(side, baseline), args.requests)
    print(f"page {page:4d} (offset {(page - 1) * LIMIT:6d}), {args.requests} requests:")
    print(f"  GET through twistd:            {summary(http_times)}")
    print(f"  its statements on the db:      {summary(direct)}")
    print(f"  baseline (plain OFFSET rows):  {summary(base)}   "
          f"ratio ours/baseline {statistics.median(direct) / statistics.median(base):.2f}")


def run(side_class: Any, args: argparse.Namespace) -> None:
    pin(0)
    side = side_class()
    pin(1)
    try:
        start = time.perf_counter()
        side.fill(args.images)
        print(f"\n== {side.name}: {args.images} served images of one account "
              f"(+ deleted, expired, another account's), filled in {time.perf_counter() - start:.1f} s; "
              f"load average {os.getloadavg()[0]:.2f} on {len(CPUS)} CPUs")
        now = time.time()
        for page in PAGES:
            measure_page(side, page, now, args)
        statements = listing_statements(PAGES[-1], now, args.images)
        for label, (sql, params) in zip(("count", "page"), statements, strict=True):
            print(f"plan of the {label} statement (page {PAGES[-1]}):\n{side.explain(sql, params)}")
        sql, params = baseline_statement(PAGES[-1], now)
        print(f"plan of the baseline (page {PAGES[-1]}):\n{side.explain(sql, params)}")
    finally:
        side.stop()


def arguments(doc: str, requests: int) -> argparse.ArgumentParser:
    """The options of a bench at N images on one or both databases (this one's and its siblings')."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=requests)
    parser.add_argument("--backend", choices=("sqlite", "postgresql", "both"), default="both")
    return parser


def on_each_backend(args: argparse.Namespace, run: Any) -> None:
    """``run(side_class, args)`` for each database ``--backend`` names."""
    sides = {"sqlite": [SqliteSide], "postgresql": [PostgresSide], "both": [SqliteSide, PostgresSide]}
    for side_class in sides[args.backend]:
        run(side_class, args)


def main() -> None:
    parser = arguments(__doc__, 200)
    args = parser.parse_args()
    if args.images < PAGES[-1] * LIMIT:
        parser.error(f"--images must be at least {PAGES[-1] * LIMIT} for page {PAGES[-1]} to be full")
    on_each_backend(args, run)


if __name__ == "__main__":
    main()
