"""Memory while slow clients stream a big original from S3 storage.

    python bench/slow_clients.py [--clients 20] [--size-mb 30] [--rate-kb 1024]

IMGSHARE runs with ``--storage s3://`` on a moto_server bucket (loopback).  A
30 MB original is uploaded; then 20 clients read it through ``/img/`` at
about 1 MB/s each, with small socket receive buffers so that the server's
flow control, not the kernel, holds the bytes back.  The server's RSS is
printed before, during (sampled every second) and after; the bar is growth
below 30 MB while the clients read (memory must not follow file size or
client speed).  Every client checks the bytes it got.
"""

from __future__ import annotations

import argparse
import hashlib
import socket
import threading
import time

from common import Imgshare, S3Bucket, padded_jpeg

MB = 1_000_000
BAR = 30 * MB


def slow_read(port: int, path: str, rate: int, out: dict, index: int) -> None:
    """GET ``path`` and read the body at about ``rate`` bytes/s; record digest and length."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 * 1024)
    sock.connect(("127.0.0.1", port))
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n".encode())
    digest = hashlib.sha256()
    head = b""
    body_bytes = 0
    chunk = min(64 * 1024, max(1024, rate // 20))
    started = time.monotonic()
    while True:
        data = sock.recv(chunk)
        if not data:
            break
        if head is not None:
            head += data
            if b"\r\n\r\n" not in head:
                continue
            head, data = head.split(b"\r\n\r\n", 1)
            out[index] = {"status": head.split(b" ", 2)[1].decode()}
            head = None
        digest.update(data)
        body_bytes += len(data)
        ahead = body_bytes / rate - (time.monotonic() - started)
        if ahead > 0:
            time.sleep(ahead)
    sock.close()
    out[index].update(length=body_bytes, sha256=digest.hexdigest(), seconds=time.monotonic() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--size-mb", type=float, default=30)
    parser.add_argument("--rate-kb", type=int, default=1024, help="each client's read rate in KiB/s")
    args = parser.parse_args()
    bucket = S3Bucket()
    server = None
    try:
        server = Imgshare("--storage", bucket.url, env=bucket.env)
        data = padded_jpeg(int(args.size_mb * MB))
        name = server.upload("big.jpg", data)
        path = f"/img/bench/{name}"
        expected = hashlib.sha256(data).hexdigest()
        # one full read first, so lazily built things (clients, pools) are in the baseline
        threading.Thread(target=slow_read, args=(server.port, path, 1 << 30, {}, 0)).start()
        time.sleep(2)
        before = server.rss()
        print(f"{len(data) / MB:.1f} MB original on S3 storage; {args.clients} clients at "
              f"~{args.rate_kb} KiB/s each")
        print(f"RSS before:  {before / MB:7.1f} MB")
        results: dict[int, dict] = {}
        threads = [threading.Thread(target=slow_read, args=(server.port, path, args.rate_kb * 1024, results, i))
                   for i in range(args.clients)]
        for t in threads:
            t.start()
        samples = []
        while any(t.is_alive() for t in threads):
            time.sleep(1)
            samples.append(server.rss())
            print(f"  during {len(samples):3d} s: {samples[-1] / MB:7.1f} MB", flush=True)
        for t in threads:
            t.join()
        time.sleep(1)
        after = server.rss()
        peak = max(samples)
        print(f"RSS before {before / MB:.1f} MB, peak during {peak / MB:.1f} MB, after {after / MB:.1f} MB")
        print(f"growth while streaming: {(peak - before) / MB:.1f} MB (bar: < {BAR / MB:.1f} MB)")
        good = sum(1 for r in results.values()
                   if r.get("status") == "200" and r.get("length") == len(data) and r.get("sha256") == expected)
        seconds = [r["seconds"] for r in results.values() if "seconds" in r]
        print(f"{good}/{args.clients} clients got every byte intact, in {min(seconds):.1f}-{max(seconds):.1f} s")
        print("PASS" if peak - before < BAR and good == args.clients else "FAIL")
    finally:
        if server is not None:
            server.stop()
        bucket.stop()


if __name__ == "__main__":
    main()
