"""Uploads/s and p50 latency of img_upload.php, against a bare twisted.web resource that only stores the body.

Three baselines: "base" is that resource behind twisted.web's stock Request (which
parses every multipart body on the reactor before any resource sees it), "raw"
the same resource with that parsing turned off (the cost of receiving and
writing the bytes, nothing more), and "durable" the raw one storing the body as a
durable store must (the file fsynced, renamed into place, its folder fsynced, in a
thread): what a 200 that means "stored" costs at the least.

IMGSHARE's uploads go on deriving four JPEGs each after their 200s: "ours up/s" is
the rate of the answers, "with derived up/s" counts until the last derived file is
recorded (the job queue of ``/metrics`` empty), the rate that can be sustained.
The baselines are measured only after that, so the derivations never compete with
them for the cores.

    python bench/upload.py [--count 40] [--clients 2]
"""

from __future__ import annotations

import argparse
import time

from common import Baseline, Imgshare, drained, multipart, noise_jpeg, p50, request, run_clients


def measure(port: int, path: str, body: bytes, ctype: str, clients: int, count: int) -> tuple[float, float]:
    def job(conn):
        status, out = request(conn, "POST", path, body, {"Content-Type": ctype})
        assert status == 200, (status, out[:200])

    run_clients(port, 1, 2, job)  # warm up
    start = time.perf_counter()
    times = run_clients(port, clients, count // clients, job)
    elapsed = time.perf_counter() - start
    return len(times) / elapsed, p50(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=40)
    parser.add_argument("--clients", type=int, default=2)
    args = parser.parse_args()
    ours, base = Imgshare(), Baseline()
    try:
        print(f"{'file':>8} {'ours up/s':>10} {'with derived up/s':>18} {'base up/s':>10} {'ratio':>6} {'raw up/s':>9}"
              f" {'ratio':>6} {'durable up/s':>13} {'ratio':>6} {'ours p50':>9} {'base p50':>9} {'raw p50':>9}"
              f" {'durable p50':>12}")
        for label, size, count in (("100 KB", 100_000, args.count), ("5 MB", 5_000_000, max(4, args.count // 4))):
            photo = noise_jpeg(size)
            body, ctype = multipart({"token": ours.token}, "photo.jpg", photo)
            drained(ours.port)
            o_rate, o_p50 = measure(ours.port, "/api/v1/img_upload.php", body, ctype, args.clients, count)
            sustained = count / (count / o_rate + drained(ours.port))
            b_rate, b_p50 = measure(base.port, "/store", body, ctype, args.clients, count)
            r_rate, r_p50 = measure(base.raw_port, "/store", body, ctype, args.clients, count)
            d_rate, d_p50 = measure(base.raw_port, "/durable", body, ctype, args.clients, count)
            print(f"{label:>8} {o_rate:>10.1f} {sustained:>18.1f} {b_rate:>10.1f} {o_rate / b_rate:>6.2f} {r_rate:>9.1f} "
                  f"{o_rate / r_rate:>6.2f} {d_rate:>13.1f} {o_rate / d_rate:>6.2f} {o_p50 * 1000:>7.1f}ms "
                  f"{b_p50 * 1000:>7.1f}ms {r_p50 * 1000:>7.1f}ms {d_p50 * 1000:>10.1f}ms")
    finally:
        ours.stop()
        base.stop()


if __name__ == "__main__":
    main()
