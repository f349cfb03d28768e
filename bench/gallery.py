"""The /images gallery page at 100 000 images of one account, on SQLite and PostgreSQL:
page 1, page 1000, searches and sort=largest deep pages, as server time.

    python bench/gallery.py [--images 100000] [--requests 100] [--backend sqlite|postgresql|both]

The database is filled as ``bench/list_images.py`` fills it (one bulk INSERT straight
into the database of a real ``twistd imgshare``, plus deleted, expired and another
account's rows; then ANALYZE, and VACUUM on PostgreSQL).  A session row for the
account is written the same way, so the requests carry a session cookie as a
browser would.  Each URL is fetched serially on one keep-alive connection from the
loopback; the time is from the request sent to the last byte of the page read,
the server's whole work (session lookup, the queries, the template), no browser.
Then the statements of each listing straight on the database, and their plans.

The searches: ``photo12345`` (one original name matches), ``99`` (names holding
"99": about 5 % of them), ``photo`` (every image of the account matches: the worst
case, the count and the page both walk the whole account).  The server (and
PostgreSQL) run on CPU 0, this load on CPU 1 when the machine has two.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import os
import secrets
import sys
import time
from typing import Any
from urllib.parse import urlencode

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from list_images import (  # noqa: E402  (the folder of this script first)
    ACCOUNT,
    CPUS,
    PostgresSide,
    SqliteSide,
    arguments,
    on_each_backend,
    pin,
    psycopg_sql,
    summary,
    timed,
)

from imgshare import db  # noqa: E402

PAGE_SIZE = 24
#: (label, the gallery's query fields).
CASES = (
    ("page 1", {}),
    ("page 1000", {"page": "1000"}),
    ("search one match (q=photo12345)", {"q": "photo12345"}),
    ("search ~5 % (q=99)", {"q": "99"}),
    ("search all match (q=photo)", {"q": "photo"}),
    ("search all, page 42 (the last within the count cap)", {"q": "photo", "page": "42"}),
    ("sort=largest page 1", {"sort": "largest"}),
    ("sort=largest page 1000", {"sort": "largest", "page": "1000"}),
    ("sort=largest page 2084 (middle)", {"sort": "largest", "page": "2084"}),
    ("sort=oldest page 1000", {"sort": "oldest", "page": "1000"}),
    ("q=99 sort=largest", {"q": "99", "sort": "largest"}),
)


def add_session(side: Any) -> str:
    """A live session of ``ACCOUNT`` written into the database; its cookie value."""
    session_id = secrets.token_urlsafe(32)
    now = time.time()
    sql = "INSERT INTO sessions (digest, account, created, expires) VALUES (?, ?, ?, ?)"
    params = (hashlib.sha256(session_id.encode("ascii")).hexdigest(), ACCOUNT, now, now + 30 * 86400)
    if isinstance(side, SqliteSide):
        side.conn.execute(sql, params)
    else:
        with side.conn.cursor() as cursor:
            cursor.execute(psycopg_sql(sql), params)
    return session_id


class DirectTx:
    """A ``db.Tx`` straight on the bench's own connection to the database (it never
    suspends), recording the statements it runs."""

    share_lock = skip_locked = ""

    def __init__(self, side: Any):
        self.side = side
        postgres = isinstance(side, PostgresSide)
        self.search_key = "search_key" if postgres else ""
        self.least, self.greatest = ("LEAST", "GREATEST") if postgres else ("MIN", "MAX")
        self.byte_order = ' COLLATE "C"' if postgres else ""
        self.statements: list[tuple[str, tuple]] = []

    async def execute(self, sql: str, params: Any = ()) -> list[tuple]:
        self.statements.append((sql, tuple(params)))
        return self.side.query(sql, tuple(params))


def listing(side: Any, fields: dict[str, str], now: float) -> DirectTx:
    """Run the gallery's listing for ``fields`` on the database; the Tx that ran it."""
    tx = DirectTx(side)
    page = int(fields.get("page", "1"))
    coroutine = db.find_images_page(tx, ACCOUNT, now, (page - 1) * PAGE_SIZE, PAGE_SIZE,
                                    fields.get("sort", "newest"), fields.get("q", ""))
    try:
        coroutine.send(None)
    except StopIteration:
        pass
    else:
        raise RuntimeError("the listing waited for something")
    return tx


def through_server(port: int, cookie: str, fields: dict[str, str], repeat: int) -> list[float]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    path = "/images" + ("?" + urlencode(fields) if fields else "")
    headers = {"Cookie": f"imgshare_session={cookie}"}

    def job() -> None:
        conn.request("GET", path, headers=headers)
        response = conn.getresponse()
        body = response.read()
        assert response.status == 200, (response.status, body[:300])
        assert b'class="card item"' in body, body[:300]

    try:
        return timed(job, repeat)
    finally:
        conn.close()


def run(side_class: Any, args: argparse.Namespace) -> None:
    pin(0)
    side = side_class()
    pin(1)
    try:
        start = time.perf_counter()
        side.fill(args.images)
        cookie = add_session(side)
        print(f"\n== {side.name}: {args.images} served images of one account "
              f"(+ deleted, expired, another account's), filled in {time.perf_counter() - start:.1f} s; "
              f"load average {os.getloadavg()[0]:.2f} on {len(CPUS)} CPUs")
        now = time.time()
        for label, fields in CASES:
            http_times = through_server(side.server.port, cookie, fields, args.requests)
            direct = timed(lambda f=fields: listing(side, f, now), args.requests)
            print(f"{label:34s} GET /images: {summary(http_times)}   its listing on the db: {summary(direct)}")
        if args.plans:
            for label, fields in CASES:
                for sql, params in listing(side, fields, now).statements:
                    print(f"plan, {label}:\n  {sql}\n{side.explain(sql, params)}")
    finally:
        side.stop()


def main() -> None:
    parser = arguments(__doc__, 100)
    parser.add_argument("--plans", action="store_true", help="print the query plans too")
    args = parser.parse_args()
    if args.images < 2084 * PAGE_SIZE:
        parser.error(f"--images must be at least {2084 * PAGE_SIZE} for the deep pages to be full")
    on_each_backend(args, run)


if __name__ == "__main__":
    main()
