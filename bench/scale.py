"""A million images in one account: /img/, the gallery, the list API, the purge and RSS
as the account grows, against the same server at 1 000 images in the same run.

    python bench/scale.py [--sizes 1000,100000,1000000] [--backend sqlite|postgresql|both]
                          [--seconds 5] [--rounds 2] [--requests 40] [--no-purge]
    python bench/scale.py --quick      # 1 000 and 100 000 images, SQLite only, shorter runs

For each backend one real ``twistd imgshare`` (PostgreSQL: a throw-away cluster on
loopback) serves one real uploaded 60 KB JPEG (the file /img/ is measured on); the
account then grows to each size in turn, its rows written straight into the
database as ``bench/list_images.py`` writes them (one INSERT … SELECT over a series
per kind of row, generated inside the database; 0.1 % deleted, 0.1 % expired and 20 %
of another account's on top; migration 010's counters recomputed; ANALYZE, and VACUUM
on PostgreSQL), and the server's expiry service is let purge the deleted and expired
ones before anything is measured.  Only the uploaded image has files: the others are listed, never read.

At each size:
  - /img/ req/s: ``wrk -t1 -c16`` on core 1, the server (and PostgreSQL) on core 0,
    in rounds interleaved with a second server of the same backend kept at the first
    size (the baseline; goal: the median ratio of the rounds >= 0.95); the ratio to
    the growing server's own figure at the first size is printed too;
  - the gallery (/images, with a session cookie) and GET /api/v1/images: first page,
    the middle (by page number: an OFFSET skip from the nearer end; and at a cursor,
    as the Older link and ``next`` reach it), last page: whole server time, median of
    ``--requests`` serial requests on one keep-alive connection (goal: <= 30 ms);
  - the gallery's listing SQL alone (the statements the page runs for its images and
    count, straight on the database) next to the page's server time: the rest is the
    session, the derivation and settings look-ups and the render;
  - the server's RSS;
  - the purge of 1 % expired (``bench/purge.py`` at that size, SQLite and local files,
    pinned to core 0): its time (goal <= 10 s at 1 000 000) and longest reactor stall.

The machine is shared while helpers work: the figures are noisy; compare the ratios
within one run.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import statistics
import subprocess
import sys
import time
from typing import Any
from urllib.parse import urlencode

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import CLIENT_CPU, REPO, SERVER_CPU, noise_jpeg, pinned, wrk, wrk_available  # noqa: E402
from gallery import DirectTx, add_session, listing  # noqa: E402
from list_images import ACCOUNT, CPUS, PostgresSide, SqliteSide, pin, timed  # noqa: E402

from imgshare import db  # noqa: E402
from imgshare.domain import cursors  # noqa: E402
from imgshare.domain.records import LIVE  # noqa: E402

PAGE_SIZE = 24
API_LIMIT = 24
#: One row in DEAD is deleted and one expired (the server purges them before measuring).
DEAD = 1000


def ms(times: list[float]) -> float:
    return statistics.median(times) * 1000


def get(conn: http.client.HTTPConnection, path: str, headers: dict[str, str]) -> bytes:
    """The body of a 200 to GET ``path``; a 503 (the database out of reach for a moment,
    seen on a loaded machine) is retried twice, with a warning."""
    retries = 2
    while True:
        conn.request("GET", path, headers=headers)
        response = conn.getresponse()
        body = response.read()
        if response.status != 503 or not retries:
            break
        print(f"  warning: GET {path} answered 503; retrying", flush=True)
        retries -= 1
        time.sleep(1)
    if response.status != 200:
        raise RuntimeError(f"GET {path}: {response.status} {body[:300]!r}")
    return body


def server_time(port: int, path: str, headers: dict[str, str], repeat: int, check: Any) -> float:
    """Median ms of ``path`` fetched serially on one keep-alive connection (``check`` the body)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        check(get(conn, path, headers))
        return ms(timed(lambda: get(conn, path, headers), repeat))
    finally:
        conn.close()


def cards(body: bytes) -> list[str]:
    return re.findall(r'<h3 class="name">([^<]+)</h3>', body.decode())


def position_at(side: Any, offset: int, now: float) -> str:
    """The cursor of the listed image at ``offset`` (newest first): the place an Older
    link or ``next`` holds after ``offset + 1`` images."""
    rows = side.query(f"SELECT uploaded, id {db._LISTED} {db._NEWEST_FIRST} LIMIT 1 OFFSET ?",
                      (ACCOUNT, LIVE, now, offset))
    return cursors.encode(cursors.Position("newest", rows[0][0], rows[0][1]))


def cursor_listing(side: Any, cursor: str, now: float) -> None:
    """The gallery's listing at ``cursor``, straight on the database."""
    position = cursors.decode(cursor, "newest")
    coroutine = db.find_images_at(DirectTx(side), ACCOUNT, now, position.key, position.id, False, PAGE_SIZE)
    try:
        coroutine.send(None)
    except StopIteration:
        pass


def wait_for_purge(side: Any) -> float:
    """Wait until the server's expiry service has purged the deleted and expired rows
    of a fill (it would compete with the measurements); the seconds it took."""
    start = time.perf_counter()
    while side.query("SELECT COUNT(*) FROM images WHERE state <> ? OR (expires IS NOT NULL AND expires <= ?)",
                     (LIVE, time.time()))[0][0]:
        if time.perf_counter() - start > 900:
            raise RuntimeError("the server did not purge the fill's deleted and expired rows within 15 minutes")
        time.sleep(0.5)
    return time.perf_counter() - start


def measure(side: Any, cookie: str, image_path: str, total: int, args: argparse.Namespace,
            base: Any, base_path: str) -> dict[str, float]:
    """Every figure at the current size (``total`` listed images); /img/ in rounds
    interleaved with the baseline server ``base`` (the same server at the first size)."""
    port = side.server.port
    now = time.time()
    pages = -(-total // PAGE_SIZE)
    middle = (pages + 1) // 2
    figures: dict[str, float] = {}
    rates, ratios = [], []
    for _ in range(args.rounds):
        baseline = wrk(base.server.port, base_path, 16, args.seconds, CLIENT_CPU)
        rates.append(wrk(port, image_path, 16, args.seconds, CLIENT_CPU))
        ratios.append(rates[-1] / baseline if baseline else float("nan"))
    figures["img"] = statistics.median(rates)
    figures["img ratio"] = statistics.median(ratios)
    browser = {"Cookie": f"imgshare_session={cookie}"}
    at_middle = position_at(side, (middle - 1) * PAGE_SIZE - 1, now) if middle > 1 else None
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    by_number = cards(get(conn, f"/images?page={middle}", browser))
    conn.close()
    gallery = {"gallery first": {}, "gallery middle by number": {"page": str(middle)},
               "gallery last": {"page": str(pages)}}
    if at_middle:
        gallery["gallery middle at a cursor"] = {"page": str(middle), "after": at_middle}

    def is_page(fields: dict[str, str]) -> Any:
        def check(body: bytes) -> None:
            shown = cards(body)
            if not shown or (fields.get("after") and shown != by_number):
                raise RuntimeError(f"/images {fields}: {len(shown)} cards, not the page by number")
        return check

    for label, fields in gallery.items():
        path = "/images" + ("?" + urlencode(fields) if fields else "")
        figures[label] = server_time(port, path, browser, args.requests, is_page(fields))
        if "after" in fields:
            figures[label + " SQL"] = ms(timed(lambda c=fields["after"]: cursor_listing(side, c, now), args.requests))
        else:
            figures[label + " SQL"] = ms(timed(lambda f=fields: listing(side, f, now), args.requests))
    token = {"Authorization": f"Bearer {side.server.token}"}
    api_pages = -(-total // API_LIMIT)
    deep = (api_pages + 1) // 2
    api = {"API first": f"page=1&limit={API_LIMIT}", "API deep by number": f"page={deep}&limit={API_LIMIT}"}
    if deep > 1:
        api["API deep at a cursor"] = f"after={position_at(side, (deep - 1) * API_LIMIT - 1, now)}&limit={API_LIMIT}"

    def is_listing(body: bytes) -> None:
        answer = json.loads(body)
        if answer["total"] != total or len(answer["images"]) != API_LIMIT:
            raise RuntimeError(f"API: total {answer['total']} (expected {total}), {len(answer['images'])} images")

    for label, query in api.items():
        figures[label] = server_time(port, f"/api/v1/images?{query}", token, args.requests, is_listing)
    figures["RSS MB"] = side.server.rss() / 1e6
    return figures


def purge(images: int) -> tuple[float, float] | None:
    """``bench/purge.py`` at ``images`` with 1 % expired, pinned to the server's core:
    (seconds, longest stall in ms)."""
    out = subprocess.run(
        pinned([sys.executable, os.path.join(REPO, "bench", "purge.py"), "--images", str(images),
                "--expired", str(max(1, images // 100))], SERVER_CPU),
        capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=REPO), check=True).stdout
    found = re.search(r"purged in ([\d.]+) s .*longest reactor stall ([\d.]+) ms", out)
    if found is None:
        print(f"  purge: no figures in its output:\n{out}")
        return None
    return float(found.group(1)), float(found.group(2))


def report(sizes: list[int], results: dict[int, dict[str, float]], purges: dict[int, Any]) -> None:
    base = results[sizes[0]]
    labels = list(results[sizes[-1]])
    print(f"\n{'':34s}" + "".join(f"{n:>16,d}" for n in sizes).replace(",", " "))
    for label in labels:
        unit = "" if label in ("RSS MB", "img ratio") else (" req/s" if label == "img" else " ms")
        row = "".join(f"{results[n].get(label, float('nan')):>16.2f}" for n in sizes)
        title = {"img": "/img/ 60 KB wrk -c16", "img ratio": "  /img/ ratio, interleaved baseline"}.get(label, label)
        print(f"{title + unit:34s}{row}")
        if label == "img":
            print(f"{'  ratio to the first size':34s}" + "".join(f"{results[n]['img'] / base['img'] if base['img'] else float('nan'):>16.2f}"
                                                            for n in sizes))
    for label in labels:
        if label.endswith(" SQL"):
            page = label[:-4]
            print(f"{page + ': not SQL (session, look-ups, render)':34s}" + "".join(
                f"{results[n].get(page, float('nan')) - results[n].get(label, float('nan')):>16.2f}" for n in sizes))
    if purges:
        print(f"{'purge 1 % expired, s':34s}" + "".join(f"{purges[n][0]:>16.2f}" if purges.get(n) else f"{'-':>16s}"
                                                      for n in sizes))
        print(f"{'  longest reactor stall, ms':34s}" + "".join(
            f"{purges[n][1]:>16.1f}" if purges.get(n) else f"{'-':>16s}" for n in sizes))


def run(side_class: Any, args: argparse.Namespace) -> None:
    pin(0)
    side, base = side_class(), side_class()
    pin(1)
    results: dict[int, dict[str, float]] = {}
    try:
        photo = noise_jpeg(60_000)
        name = side.server.upload("photo.jpg", photo)
        image_path = f"/img/{ACCOUNT}/{name}"
        base_path = f"/img/{ACCOUNT}/{base.server.upload('photo.jpg', photo)}"
        base.fill(args.sizes[0], 0, DEAD)
        wait_for_purge(base)
        cookie = add_session(side)
        already = 0
        print(f"\n== {side.name}: one account growing to {', '.join(map(str, args.sizes))} images; "
              f"load average {os.getloadavg()[0]:.2f} on {len(CPUS)} CPUs")
        for size in args.sizes:
            start = time.perf_counter()
            side.fill(size, already, DEAD)
            already = size
            filled = time.perf_counter() - start
            purged = wait_for_purge(side)
            # The pages' totals read the counters of migration 010: they must agree with the rows.
            total = side.query(f"SELECT COUNT(*) {db._LISTED}", (ACCOUNT, LIVE, time.time()))[0][0]
            assert total == size + 1, (total, size)
            try:
                results[size] = measure(side, cookie, image_path, total, args, base, base_path)
            except RuntimeError:
                with open(os.path.join(side.server.data, "twistd.log")) as log:
                    print("the server's log ends:\n" + "".join(log.readlines()[-15:]))
                raise
            print(f"  {size} images: filled in {filled:.1f} s, its deleted and expired rows purged by the "
                  f"server in {purged:.1f} s; " + ", ".join(
                f"{k} {v:.1f}" for k, v in results[size].items()), flush=True)
    finally:
        side.stop()
        base.stop()
    purges = {}
    if args.purge and side_class is SqliteSide:
        for size in args.sizes:
            purges[size] = purge(size)
    print(f"\n== {side.name}, load average now {os.getloadavg()[0]:.2f}")
    report(args.sizes, results, purges)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1000,100000,1000000",
                        type=lambda text: sorted(int(n) for n in text.split(",")))
    parser.add_argument("--backend", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument("--seconds", type=float, default=5.0, help="each wrk run")
    parser.add_argument("--rounds", type=int, default=2, help="wrk runs per size (the median is reported)")
    parser.add_argument("--requests", type=int, default=40, help="requests per page measured")
    parser.add_argument("--no-purge", dest="purge", action="store_false", help="skip the purge runs")
    parser.add_argument("--quick", action="store_true", help="1 000 and 100 000 images on SQLite, shorter runs")
    args = parser.parse_args()
    if args.quick:
        args.sizes, args.backend, args.seconds, args.rounds, args.requests = [1000, 100_000], "sqlite", 2.0, 1, 15
    if not wrk_available():
        parser.error("wrk is missing (apt-get install -y wrk)")
    if args.sizes[0] < 100:
        parser.error("the smallest size must be at least 100 images")
    sides = {"sqlite": [SqliteSide], "postgresql": [PostgresSide], "both": [SqliteSide, PostgresSide]}
    for side_class in sides[args.backend]:
        run(side_class, args)


if __name__ == "__main__":
    main()
