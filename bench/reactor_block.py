"""Is the reactor free while a large upload is processed?

Sends a ~30 MB upload and, at the same time, GETs a small file every 10 ms,
printing the slowest GET while the upload was in flight.  The same is done
against a bare twisted.web resource whose Request parses multipart on the
reactor (twisted.web's default), as the baseline.

    python bench/reactor_block.py
"""

from __future__ import annotations

import http.client
import io
import threading
import time

from common import Baseline, Imgshare, multipart, name_of, noise_jpeg, request


def big_bmp(target: int = 30_000_000) -> bytes:
    from PIL import Image

    side = int((target / 3) ** 0.5)
    out = io.BytesIO()
    Image.linear_gradient("L").resize((side, side)).convert("RGB").save(out, "BMP")
    return out.getvalue()


def probe(port: int, path: str, body: bytes, ctype: str, small_path: str) -> tuple[float, float, int]:
    """(upload seconds, slowest concurrent GET in ms, GETs made during the upload)."""
    latencies: list[float] = []
    done = threading.Event()

    def poll() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        while not done.is_set():
            t = time.perf_counter()
            status, _ = request(conn, "GET", small_path)
            assert status == 200, status
            latencies.append(time.perf_counter() - t)
            time.sleep(0.01)

    poller = threading.Thread(target=poll)
    poller.start()
    time.sleep(0.2)
    latencies.clear()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    t = time.perf_counter()
    status, out = request(conn, "POST", path, body, {"Content-Type": ctype})
    elapsed = time.perf_counter() - t
    done.set()
    poller.join()
    assert status == 200, (status, out[:200])
    return elapsed, max(latencies) * 1000, len(latencies)


def main() -> None:
    ours, base = Imgshare(), Baseline()
    try:
        small = noise_jpeg(20_000)
        body, ctype = multipart({"token": ours.token}, "small.jpg", small)
        conn = http.client.HTTPConnection("127.0.0.1", ours.port)
        status, out = request(conn, "POST", "/api/v1/img_upload.php", body, {"Content-Type": ctype})
        small_ours = f"/img/bench/{name_of(out)}"
        with open(f"{base.folder}/small.jpg", "wb") as f:
            f.write(small)
        big = big_bmp()
        body, ctype = multipart({"token": ours.token}, "big.bmp", big)
        print(f"upload of {len(body) / 1e6:.1f} MB while GETting a {len(small)} byte file every 10 ms")
        up, worst, n = probe(ours.port, "/api/v1/img_upload.php", body, ctype, small_ours)
        print(f"IMGSHARE:             upload {up:5.2f} s, slowest concurrent GET {worst:7.1f} ms ({n} GETs)")
        # The baseline parses multipart on the reactor: its stock Request does.
        up, worst, n = probe(base.port, "/parse", body, ctype, "/files/small.jpg")
        print(f"twisted.web default:  upload {up:5.2f} s, slowest concurrent GET {worst:7.1f} ms ({n} GETs)")
    finally:
        ours.stop()
        base.stop()


if __name__ == "__main__":
    main()
