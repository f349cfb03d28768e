"""How soon after an upload are a 12 MP JPEG's XGA, VGA and QVGA served?  (Target: 2 s, idle server.)

    python bench/variants_ready.py [--runs 5]
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import statistics
import time

from common import Imgshare, multipart, request


def photo_12mp() -> bytes:
    """A photo-like 4000x3000 JPEG: smooth gradients with fine texture."""
    import os

    from PIL import Image, ImageFilter

    base = Image.linear_gradient("L").resize((4000, 3000)).convert("RGB")
    noise = Image.frombytes("RGB", (1000, 750), os.urandom(1000 * 750 * 3)).resize((4000, 3000))
    img = Image.blend(base, noise.filter(ImageFilter.GaussianBlur(2)), 0.35)
    out = io.BytesIO()
    img.save(out, "JPEG", quality=90)
    return out.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    server = Imgshare()
    try:
        data = photo_12mp()
        print(f"12 MP JPEG of {len(data) / 1e6:.1f} MB; {args.runs} runs")
        ready, uploads = [], []
        for _ in range(args.runs):
            body, ctype = multipart({"token": server.token}, "photo.jpg", data)
            conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
            t0 = time.perf_counter()
            status, out = request(conn, "POST", "/api/v1/img_upload.php", body, {"Content-Type": ctype})
            t1 = time.perf_counter()
            assert status == 200, out
            urls = json.loads(out)["urls"]
            for variant in ("qvga", "vga", "xga"):  # the last one made is asked first
                path = urls[variant].split(str(server.port), 1)[1]
                status, _ = request(conn, "GET", path)
                assert status == 200, (variant, status)
            t2 = time.perf_counter()
            uploads.append(t1 - t0)
            ready.append(t2 - t1)
            time.sleep(1.0)  # idle between runs
        print(f"upload answered after     median {statistics.median(uploads) * 1000:6.0f} ms")
        print(f"all three variants served median {statistics.median(ready) * 1000:6.0f} ms after the answer"
              f" (worst {max(ready) * 1000:.0f} ms; target 2000 ms)")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
