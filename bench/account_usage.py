"""The account's usage (/account, schema 010's counters) at 100 000 images, on SQLite and PostgreSQL.

    python bench/account_usage.py [--images 100000] [--requests 200] [--backend sqlite|postgresql|both]

For each backend: a real ``twistd imgshare``, then the rows of ``bench/list_images.py``
(``--images`` served images of one account, deleted, expired and another account's)
written straight into its database, and the usage counters filled by migration 010's
own backfill statement (timed: what the upgrade costs at this size).  It measures

- ``GET /account`` through the server, logged in (the whole page: session, usage, layout);
- ``db.account_usage``'s statement straight on the database (one row by the unique name),
  against the baseline, counting and summing the account's rows (``COUNT(*)``, ``SUM(size)``);
- the gallery's total (``db._count_listed``, used by ``list_images_page``) as it was before
  schema 010 (counting the account's live entries), against what it is now: the counters
  less the account's uploads in flight and its expired rows not yet purged;

median and p95 in ms, with the query plans.  The server (and PostgreSQL) run on CPU 0,
this load on CPU 1, when the machine has two CPUs or more.
"""

from __future__ import annotations

import argparse
import http.client
import os
import re
import statistics
import time
import urllib.parse
from typing import Any

from list_images import (
    ACCOUNT,
    CPUS,
    SqliteSide,
    arguments,
    on_each_backend,
    pin,
    summary,
    timed,
    usage_backfill,
)

from imgshare import db
from imgshare.domain.records import DELETED, LIVE, UPLOADING

BASELINE_USAGE = ("SELECT COUNT(*), COALESCE(SUM(size), 0) FROM images WHERE account = ? AND state <> ?",
                  (ACCOUNT, DELETED))


def usage_statement() -> tuple[str, tuple]:
    return f"SELECT {db._USAGE} FROM accounts WHERE name = ?", (ACCOUNT,)


def count_statements(now: float) -> tuple[tuple[str, tuple], tuple[str, tuple]]:
    """(the gallery's total as ``_count_listed`` counted it before schema 010, the same from
    the counters, as it counts it now)."""
    live = "FROM images WHERE account = ? AND state = ?"
    current = (f"SELECT (SELECT COUNT(*) {live}) - (SELECT COUNT(*) {live} AND expires <= ?)",
               (ACCOUNT, LIVE, ACCOUNT, LIVE, now))
    counters = ("SELECT (SELECT image_count FROM accounts WHERE name = ?) - (SELECT COUNT(*) "
                f"{live}) - (SELECT COUNT(*) {live} AND expires <= ?)",
                (ACCOUNT, ACCOUNT, UPLOADING, ACCOUNT, LIVE, now))
    return current, counters


def backfill(side: Any) -> float:
    """Run migration 010's backfill on the filled rows once more (the fill ran it too);
    its seconds: what the upgrade costs at this size."""
    dialect = "sqlite" if isinstance(side, SqliteSide) else "postgresql"
    start = time.perf_counter()
    side.query(usage_backfill(dialect) + " RETURNING name", ())
    return time.perf_counter() - start


def logged_in(port: int) -> str:
    """A session cookie for the bench account (its password is common.Imgshare's)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.request("GET", "/login")
    response = conn.getresponse()
    page = response.read().decode()
    cookies = [c.split(";", 1)[0] for c in response.headers.get_all("Set-Cookie") or []]
    csrf = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
    body = urllib.parse.urlencode({"csrf": csrf, "name": ACCOUNT, "password": "bench password"})
    conn.request("POST", "/login", body, {"Content-Type": "application/x-www-form-urlencoded",
                                          "Cookie": "; ".join(cookies)})
    response = conn.getresponse()
    response.read()
    assert response.status == 303, response.status
    cookies += [c.split(";", 1)[0] for c in response.headers.get_all("Set-Cookie") or []]
    conn.close()
    return "; ".join(cookies)


def account_page(port: int, cookie: str, repeat: int, images: int) -> list[float]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    shown = f"You have {images} images" if images != 1 else "You have 1 image"

    def job() -> None:
        conn.request("GET", "/account", headers={"Cookie": cookie})
        response = conn.getresponse()
        body = response.read().decode()
        assert response.status == 200 and shown in body, (response.status, body[:300])

    try:
        return timed(job, repeat)
    finally:
        conn.close()


def run(side_class: Any, args: argparse.Namespace) -> None:
    pin(0)
    side = side_class()
    pin(1)
    try:
        side.fill(args.images)
        seconds = backfill(side)
        counted = side.query(*BASELINE_USAGE)[0][0]
        print(f"\n== {side.name}: {args.images} served images of one account ({counted} counted: "
              f"the expired ones too, until purged); migration 010's backfill took {seconds * 1000:.0f} ms; "
              f"load average {os.getloadavg()[0]:.2f} on {len(CPUS)} CPUs")
        cookie = logged_in(side.server.port)
        page = account_page(side.server.port, cookie, args.requests, counted)
        print(f"GET /account through twistd:        {summary(page)}")
        usage = timed(lambda: side.query(*usage_statement()), args.requests)
        base = timed(lambda: side.query(*BASELINE_USAGE), args.requests)
        print(f"account_usage on the db:            {summary(usage)}")
        print(f"baseline COUNT(*)/SUM over rows:    {summary(base)}   "
              f"ratio ours/baseline {statistics.median(usage) / statistics.median(base):.3f}")
        now = time.time()
        current, counters = count_statements(now)
        assert side.query(*current) == side.query(*counters), (side.query(*current), side.query(*counters))
        as_is = timed(lambda: side.query(*current), args.requests)
        from_counters = timed(lambda: side.query(*counters), args.requests)
        print(f"gallery total by COUNT(*) (before): {summary(as_is)}")
        print(f"gallery total from the counters:    {summary(from_counters)}   "
              f"ratio counters/COUNT(*) {statistics.median(from_counters) / statistics.median(as_is):.3f}")
        for label, (sql, params) in (("account_usage", usage_statement()), ("total by COUNT(*)", current),
                                     ("total from the counters", counters)):
            print(f"plan of {label}:\n{side.explain(sql, params)}")
    finally:
        side.stop()


def main() -> None:
    on_each_backend(arguments(__doc__, 200).parse_args(), run)


if __name__ == "__main__":
    main()
