"""Serving originals through /img/.

    python bench/serve.py [--connections 16] [--big-connections 8] [--seconds 5] [--rounds 3]
        req/s for a 60 KB and a 5.4 MB original on local files (each of the same size in
        every run, a small JPEG padded with comment segments: 60 KB is under static.File's
        64 KiB read, its best case, where a photo of 65-66 KB takes it two), against twisted.web's
        static.File and nginx (nginx-light) serving the same file: the servers pinned to
        core 0, ``wrk -t1`` to core 1 (taskset), in interleaved rounds; the ratios are
        /img/ over each baseline in the same round, with each server's CPU time per
        request and wrk's (when a server's core has time to spare, the client's is the
        limit).  Without wrk the Python client is
        used, with a warning.

    python bench/serve.py --storage s3 [--requests 2000] [--big-requests 100] [--clients 4]
        req/s and MB/s for a 60 KB and a 5 MB original through /img/ on S3 storage
        (moto_server on loopback), against fetching the same objects straight from
        the S3 endpoint, /img/ on S3 storage with a local cache (--cache-dir: every
        measured request a cache hit), and /img/ on the local-files backend.
"""

from __future__ import annotations

import argparse
import http.client
import os
import resource
import shutil
import sys
import tempfile
import time

from common import (
    CLIENT_CPU,
    SERVER_CPU,
    Baseline,
    Imgshare,
    Nginx,
    S3Bucket,
    cpu_seconds,
    drained,
    noise_jpeg,
    padded_jpeg,
    request,
    run_clients,
    wrk,
    wrk_available,
)

from tests.backends import storage_url  # noqa: E402 - common put the repository on the path


def rate(port: int, path: str, expected: bytes, clients: int, total: int, pids: tuple[int, ...] = ()) -> float:
    """Requests per second for ``path``; with ``pids``, also the CPU seconds those
    processes spent per request (as ``rate.cpu``)."""
    def job(conn):
        status, body = request(conn, "GET", path)
        assert status == 200 and body == expected, status

    run_clients(port, clients, max(2, min(20, total // clients // 5)), job)  # warm up
    cpu = sum(cpu_seconds(p) for p in pids)
    start = time.perf_counter()
    done = run_clients(port, clients, max(1, total // clients), job)
    elapsed = time.perf_counter() - start
    rate.cpu = (sum(cpu_seconds(p) for p in pids) - cpu) / len(done)
    return len(done) / elapsed


def warm(port: int, path: str, expected: bytes) -> None:
    """Read ``path`` until the cache has filled (the first read fills it in the background)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    for _ in range(20):
        status, body = request(conn, "GET", path)
        assert status == 200 and body == expected, status
        time.sleep(0.1)
    conn.close()


def check(port: int, path: str, expected: bytes) -> None:
    """One GET of ``path`` answers 200 with exactly ``expected`` (wrk checks no bodies)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        status, body = request(conn, "GET", path)
    finally:
        conn.close()
    if status != 200 or body != expected:
        raise RuntimeError(f"GET {path} on {port}: {status}, {len(body)} bytes (expected {len(expected)})")


def compare_static(args: argparse.Namespace) -> None:
    """/img/ on local files against twisted.web's static.File and nginx, the servers pinned to
    one core and wrk to the other, in interleaved rounds (each round measures all three once)."""
    use_wrk = wrk_available()
    if not use_wrk:
        print("warning: wrk is missing (apt-get install -y wrk): falling back to the Python client, "
              "which saturates before the servers do", file=sys.stderr)
    ours, base = Imgshare(cpu=SERVER_CPU), Baseline(cpu=SERVER_CPU)
    logged = Imgshare(cpu=SERVER_CPU, access_log=True)
    web = None
    try:
        web = Nginx(base.folder, cpu=SERVER_CPU)
        for label, size, connections in (("60 KB", 60_000, args.connections),
                                         ("5.4 MB", 5_400_000, args.big_connections)):
            photo = padded_jpeg(size)  # the same size every run (see the docstring)
            name = ours.upload("photo.jpg", photo)
            logged_name = logged.upload("photo.jpg", photo)
            with open(f"{base.folder}/photo.jpg", "wb") as f:
                f.write(photo)
            drained(ours.port)  # the uploads' derivations would share the servers' core
            drained(logged.port)
            rows = {"/img/, --access-log FILE": (logged.port, f"/img/bench/{logged_name}", logged.proc.pid),
                    "/img/, lines in twistd log": (ours.port, f"/img/bench/{name}", ours.proc.pid),
                    "twisted.web static.File": (base.port, "/files/photo.jpg", base.proc.pid),
                    "nginx": (web.port, "/files/photo.jpg", web.proc.pid)}
            for port, path, _ in rows.values():
                check(port, path, photo)
            results: dict[str, list[float]] = {what: [] for what in rows}
            #: The server's CPU time per request in each round: steadier than req/s on a busy machine.
            costs: dict[str, list[float]] = {what: [] for what in rows}
            #: wrk's: when the server's core has time to spare, the client's core is the limit.
            client_costs: dict[str, list[float]] = {what: [] for what in rows}
            for _ in range(args.rounds):
                for what, (port, path, pid) in rows.items():
                    before = cpu_seconds(pid)
                    if use_wrk:
                        children = resource.getrusage(resource.RUSAGE_CHILDREN)
                        results[what].append(wrk(port, path, connections, args.seconds))
                        done = results[what][-1] * args.seconds
                        costs[what].append((cpu_seconds(pid) - before) / done)
                        after = resource.getrusage(resource.RUSAGE_CHILDREN)
                        client_costs[what].append((after.ru_utime + after.ru_stime - children.ru_utime
                                                   - children.ru_stime) / done)
                    else:
                        results[what].append(rate(port, path, photo, connections, args.requests))
                        costs[what].append((cpu_seconds(pid) - before) / args.requests)
            print(f"{label} original ({len(photo)} bytes), {connections} keep-alive connections, "
                  f"{'wrk -t1' if use_wrk else 'Python client'} on core {CLIENT_CPU}, servers on core "
                  f"{SERVER_CPU}, {args.rounds} interleaved rounds of {args.seconds:g} s")
            mine = results["/img/, --access-log FILE"]
            twistd_log = results["/img/, lines in twistd log"]
            print(f"  {'':<30} {'req/s':^19}   {'ratios of /img/ to it':>22}   {'CPU per request':>15}"
                  f"   {'wrk CPU per':>12}")
            print(f"  {'':<30} {'':^19}   {'--access-log':>12} {'twistd log':>11}   {'(best round)':>15}"
                  f"   {'request':>12}")
            for what, rates in results.items():
                ratios = [m / r for m, r in zip(mine, rates, strict=True)]
                plain = [m / r for m, r in zip(twistd_log, rates, strict=True)]
                print(f"  {what:<30} {min(rates):9.0f}-{max(rates):<9.0f}   "
                      f"{min(ratios):5.2f}-{max(ratios):<5.2f} {min(plain):5.2f}-{max(plain):<5.2f}   "
                      f"{min(costs[what]) * 1e6:12.0f} µs"
                      + (f"   {min(client_costs[what]) * 1e6:9.0f} µs" if client_costs[what] else ""))
    finally:
        ours.stop()
        logged.stop()
        base.stop()
        if web is not None:
            web.stop()
        shutil.rmtree(base.folder, ignore_errors=True)


def compare_s3(args: argparse.Namespace) -> None:
    bucket = S3Bucket()
    on_s3 = on_files = cached = kept = endpoint = None
    try:
        on_s3 = Imgshare("--storage", bucket.url, env=bucket.env, access_log=True)
        cache_dir = tempfile.mkdtemp(prefix="imgshare-bench-cache-")
        cached = Imgshare("--storage", bucket.url, "--cache-dir", cache_dir, env=bucket.env, access_log=True)
        on_files = Imgshare(access_log=True)
        # The same objects behind an endpoint that keeps its connections (nginx), read by a
        # second server on on_s3's database: what /img/ on S3 costs without moto's reconnects.
        objects_dir = tempfile.mkdtemp(prefix="imgshare-bench-objects-")
        endpoint = Nginx(objects_dir, bucket=bucket.bucket)
        kept = Imgshare("--storage", storage_url(f"http://127.0.0.1:{endpoint.port}", bucket.bucket),
                        env=bucket.env, access_log=True, share=on_s3)
        objects = [("60 KB", noise_jpeg(60_000), args.requests), ("5 MB", noise_jpeg(5_000_000), args.big_requests)]
        print(f"{args.clients} keep-alive clients; sqlite database on every IMGSHARE server; "
              "S3 is moto_server on loopback (it closes every connection); the keep-alive endpoint is "
              "nginx serving the same objects; 2 cores shared by all")
        print(f"{'object':>8}  {'path':<30} {'req/s':>8} {'MB/s':>8} {'vs direct':>10} "
              f"{'IMGSHARE CPU/req':>17} {'endpoint CPU/req':>17}")
        moto = bucket.server.process.pid
        for label, data, count in objects:
            s3_name = on_s3.upload("photo.jpg", data)
            files_name = on_files.upload("photo.jpg", data)
            cached_name = cached.upload("photo.jpg", data)
            warm(cached.port, f"/img/bench/{cached_name}", data)
            for server in (on_s3, on_files, cached):
                drained(server.port)  # their derivations would compete with the measurements
            os.makedirs(os.path.join(objects_dir, bucket.bucket, "bench"), exist_ok=True)
            with open(os.path.join(objects_dir, bucket.bucket, "bench", s3_name), "wb") as f:
                f.write(data)
            # (what, port, path, the server's pid, its endpoint's pid, the row it is compared with)
            rows = [
                ("S3 endpoint directly", bucket.port, bucket.path(f"bench/{s3_name}"), None, moto, 0),
                ("/img/ on S3 storage", on_s3.port, f"/img/bench/{s3_name}", on_s3.proc.pid, moto, 0),
                ("keep-alive endpoint directly", endpoint.port, f"/{bucket.bucket}/bench/{s3_name}", None,
                 endpoint.proc.pid, 2),
                ("/img/ on it", kept.port, f"/img/bench/{s3_name}", kept.proc.pid, endpoint.proc.pid, 2),
                ("/img/ on S3, cache hit", cached.port, f"/img/bench/{cached_name}", cached.proc.pid, moto, 0),
                ("/img/ on local files", on_files.port, f"/img/bench/{files_name}", on_files.proc.pid, moto, 0),
            ]
            results = []
            for _what, port, path, server_pid, upstream, _ in rows:
                r = rate(port, path, data, args.clients, count, (upstream,))
                upstream_cpu = rate.cpu
                ours_cpu = None
                if server_pid is not None:
                    # a second run for the server's own CPU (the first measured its endpoint's)
                    r2 = rate(port, path, data, args.clients, count, (server_pid,))
                    r, ours_cpu = (r + r2) / 2, rate.cpu
                results.append((r, ours_cpu, upstream_cpu))
            for (what, *_, versus), (r, ours_cpu, upstream_cpu) in zip(rows, results, strict=True):
                ours_text = "-" if ours_cpu is None else f"{ours_cpu * 1e3:.2f} ms"
                upstream_text = f"{upstream_cpu * 1e3:.2f} ms" if upstream_cpu > 0.00001 else "-"
                print(f"{label:>8}  {what:<30} {r:8.1f} {r * len(data) / 1e6:8.1f} {r / results[versus][0]:9.2f}x "
                      f"{ours_text:>17} {upstream_text:>17}")
    finally:
        for server in (on_s3, cached, on_files, kept, endpoint):
            if server is not None:
                server.stop()
        bucket.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--storage", choices=("file", "s3"), default="file")
    parser.add_argument("--requests", type=int, default=2000, help="requests for the 60 KB object")
    parser.add_argument("--big-requests", type=int, default=100, help="requests for the 5 MB object (s3)")
    parser.add_argument("--clients", type=int, default=4, help="Python clients (s3)")
    parser.add_argument("--connections", type=int, default=16, help="wrk connections for the 60 KB object")
    parser.add_argument("--big-connections", type=int, default=8, help="wrk connections for the 5.4 MB object")
    parser.add_argument("--seconds", type=float, default=5.0, help="length of one wrk run")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (file storage)")
    args = parser.parse_args()
    if args.storage == "s3":
        compare_s3(args)
    else:
        compare_static(args)


if __name__ == "__main__":
    main()
