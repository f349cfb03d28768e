"""Requests/s for a 60 KB original through /img/, against twisted.web.static.File serving the same file.

    python bench/serve.py [--requests 2000] [--clients 4]
"""

from __future__ import annotations

import argparse
import shutil
import time

from common import Baseline, Imgshare, multipart, name_of, noise_jpeg, request, run_clients


def rate(port: int, path: str, expected: bytes, clients: int, total: int) -> float:
    def job(conn):
        status, body = request(conn, "GET", path)
        assert status == 200 and body == expected, status

    run_clients(port, clients, 20, job)  # warm up
    start = time.perf_counter()
    done = run_clients(port, clients, total // clients, job)
    return len(done) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=4)
    args = parser.parse_args()
    ours, base = Imgshare(), Baseline()
    try:
        photo = noise_jpeg(60_000)
        body, ctype = multipart({"token": ours.token}, "photo.jpg", photo)
        import http.client

        conn = http.client.HTTPConnection("127.0.0.1", ours.port)
        status, out = request(conn, "POST", "/api/v1/img_upload.php", body, {"Content-Type": ctype})
        assert status == 200, out
        name = name_of(out)
        with open(f"{base.folder}/photo.jpg", "wb") as f:
            f.write(photo)
        o = rate(ours.port, f"/img/bench/{name}", photo, args.clients, args.requests)
        b = rate(base.port, "/files/photo.jpg", photo, args.clients, args.requests)
        print(f"{len(photo)} byte original, {args.clients} keep-alive clients, {args.requests} requests each side")
        print(f"/img/ (sqlite + file storage): {o:8.1f} req/s")
        print(f"twisted.web.static.File:       {b:8.1f} req/s")
        print(f"ratio ours/static:             {o / b:8.2f}")
    finally:
        ours.stop()
        base.stop()
        shutil.rmtree(base.folder, ignore_errors=True)


if __name__ == "__main__":
    main()
