"""Does hostile input stall the reactor or keep memory?

While a probe GETs a small file every 10 ms and a client uploads ordinary
photos, hostile and huge files are uploaded: BMPs and PNGs declaring
1 x 100 000 000 and 1 x 50 000 000 pixels, a progressive-JPEG scan bomb
(10000x10000 grey, its last scan repeated 16 000 times), 100-megapixel PNGs
and a burst of 12-megapixel photos (both accepted and derived).  Prints the
slowest probe GET (the reactor's worst stall, plus one loopback round trip)
against the probe's median in the same run, the hostile uploads' statuses,
and the server's RSS before, at the peak and 60 s after the burst.

The server is pinned to CPU 0, this process to CPU 1 (when there are two).

    python bench/hostile_uploads.py [--after 60]
"""

from __future__ import annotations

import argparse
import http.client
import io
import os
import statistics
import threading
import time

from common import Imgshare, multipart, name_of, noise_jpeg, request

from tests import hostile


def big_png(side: int = 10_000) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.linear_gradient("L").resize((side, side)).save(out, "PNG", compress_level=1)
    return out.getvalue()


def photo(side: tuple[int, int] = (4000, 3000)) -> bytes:
    from PIL import Image

    noise = Image.effect_noise((side[0] // 8, side[1] // 8), 40).resize(side).convert("RGB")
    out = io.BytesIO()
    Image.blend(noise, Image.linear_gradient("L").resize(side).convert("RGB"), 0.5).save(out, "JPEG", quality=88)
    return out.getvalue()


class Probe(threading.Thread):
    """GETs ``path`` every 10 ms and records each latency."""

    def __init__(self, port: int, path: str):
        super().__init__(daemon=True)
        self.port, self.path = port, path
        self.latencies: list[float] = []
        self.stop = threading.Event()

    def run(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
        while not self.stop.is_set():
            t = time.perf_counter()
            status, _ = request(conn, "GET", self.path)
            assert status == 200, status
            self.latencies.append(time.perf_counter() - t)
            time.sleep(0.01)


def upload(port: int, token: str, filename: str, data: bytes) -> tuple[int, bytes]:
    body, ctype = multipart({"token": token}, filename, data)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    try:
        return request(conn, "POST", "/api/v1/img_upload.php", body, {"Content-Type": ctype})
    finally:
        conn.close()


def wait_derived(port: int, names: list[str], timeout: float = 600.0) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    deadline = time.monotonic() + timeout
    for name in names:
        stem = name.rsplit(".", 1)[0]
        while time.monotonic() < deadline:
            status, _ = request(conn, "HEAD", f"/img/bench/qvga/{stem}.jpg")
            if status == 200:
                break
            time.sleep(0.2)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--after", type=float, default=60.0, help="seconds to wait before the last RSS")
    args = parser.parse_args()
    print("building the files ...", flush=True)
    files = [("tall.bmp", hostile.bmp_claiming(1, 100_000_000))] * 16
    files += [("tall.png", hostile.png_claiming(1, 50_000_000))] * 4
    bomb = hostile.scan_bomb(16_000, size=(10_000, 10_000))
    files += [("bomb.jpg", bomb)] * 2
    png = big_png()
    files += [("huge.png", png)] * 2
    pic = photo()
    files += [(f"photo{i}.jpg", pic) for i in range(8)]
    print(f"scan bomb {len(bomb) / 1e6:.1f} MB, 100 MP PNG {len(png) / 1e6:.1f} MB, "
          f"12 MP photo {len(pic) / 1e6:.1f} MB", flush=True)

    server = Imgshare()
    two = (os.cpu_count() or 1) >= 2
    if two:
        os.sched_setaffinity(server.proc.pid, {0})
        for tid in os.listdir(f"/proc/{server.proc.pid}/task"):
            os.sched_setaffinity(int(tid), {0})
        os.sched_setaffinity(0, {1})
    try:
        small = noise_jpeg(20_000)
        small_path = f"/img/bench/{server.upload('small.jpg', small)}"
        warm = server.upload("warm.jpg", noise_jpeg(100_000))  # Pillow loaded, pools started
        wait_derived(server.port, [warm])
        time.sleep(1)
        rss_before = server.rss()

        probe = Probe(server.port, small_path)
        probe.start()
        time.sleep(1.0)
        quiet = list(probe.latencies)

        normal_stop = threading.Event()
        normal: list[int] = []

        def ordinary() -> None:
            data = noise_jpeg(100_000)
            while not normal_stop.is_set():
                normal.append(upload(server.port, server.token, "ordinary.jpg", data)[0])

        traffic = threading.Thread(target=ordinary, daemon=True)
        traffic.start()
        peak = [rss_before]
        sampling = threading.Event()

        def sample() -> None:
            while not sampling.is_set():
                peak[0] = max(peak[0], server.rss())
                time.sleep(0.1)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        start = len(probe.latencies)
        statuses: dict[str, list[int]] = {}
        accepted: list[str] = []
        t0 = time.perf_counter()
        for filename, data in files:
            status, out = upload(server.port, server.token, filename, data)
            statuses.setdefault(filename.split(".")[0].rstrip("0123456789"), []).append(status)
            if status == 200:
                accepted.append(name_of(out))
        uploaded = time.perf_counter() - t0
        wait_derived(server.port, accepted)
        burst = time.perf_counter() - t0
        normal_stop.set()
        traffic.join()
        probe.stop.set()
        probe.join()
        during = probe.latencies[start:]
        sampling.set()
        sampler.join()
        time.sleep(args.after)
        rss_after = server.rss()

        print(f"hostile uploads: {uploaded:.1f} s; with their derivations: {burst:.1f} s")
        for name, codes in statuses.items():
            print(f"  {name:8} {codes}")
        print(f"ordinary uploads alongside: {len(normal)}, statuses {sorted(set(normal))}")
        print(f"probe GET, quiet server:  median {statistics.median(quiet) * 1000:6.1f} ms, "
              f"max {max(quiet) * 1000:6.1f} ms")
        print(f"probe GET, during burst:  median {statistics.median(during) * 1000:6.1f} ms, "
              f"p99 {sorted(during)[int(len(during) * 0.99)] * 1000:6.1f} ms, "
              f"max {max(during) * 1000:6.1f} ms ({len(during)} GETs; target max < 100 ms)")
        print(f"RSS: before {rss_before / 1e6:.0f} MB, peak {peak[0] / 1e6:.0f} MB, "
              f"{args.after:.0f} s after {rss_after / 1e6:.0f} MB")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
