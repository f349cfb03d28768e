"""What finding and removing location metadata costs an upload, against hashing the file.

Every upload is hashed (sniff's SHA-256 pass over the whole file); every upload is also
examined for location metadata (domain.location.examine, which reads metadata blocks
only), and an upload asked to strip is copied once with the GPS bytes replaced.  For a
~30 MB phone-like JPEG and PNG this prints each cost and its ratio to the hash.

    python bench/location.py
"""

from __future__ import annotations

import io
import os
import shutil
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from PIL import Image  # noqa: E402

from imgshare.domain import location, sniff  # noqa: E402
from tests import phonefiles  # noqa: E402


def best_of(runs: int, work) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return min(times)


def big_file(fmt: str) -> bytes:
    """A photo of noise (incompressible), about 30 MB, with the phone EXIF block."""
    side = 3200 if fmt == "PNG" else 5200
    image = Image.frombytes("RGB", (side, side), os.urandom(side * side * 3))
    out = io.BytesIO()
    exif = b"Exif\x00\x00" + phonefiles.phone_exif("<")
    if fmt == "PNG":
        image.save(out, "PNG", exif=exif, compress_level=0)
    else:
        image.save(out, "JPEG", exif=exif, quality=95)
    return out.getvalue()


def main() -> None:
    folder = tempfile.mkdtemp(prefix="imgshare-bench-location-")
    try:
        for fmt in ("JPEG", "PNG"):
            data = big_file(fmt)
            source = os.path.join(folder, f"source.{fmt.lower()}")
            with open(source, "wb") as f:
                f.write(data)
            work = os.path.join(folder, "work")
            hashing = best_of(5, lambda path=source: sniff._hash_file(path))
            examining = best_of(5, lambda path=source: location.examine(path))

            def strip(source=source, work=work):
                shutil.copyfile(source, work)
                location.strip_location(work)

            copying = best_of(5, lambda source=source, work=work: shutil.copyfile(source, work))
            stripping = best_of(5, strip) - copying
            print(f"{fmt} {len(data) / 1e6:.1f} MB: hash {hashing * 1000:.1f} ms, "
                  f"examine {examining * 1000:.2f} ms ({examining / hashing:.3f} of the hash), "
                  f"strip {stripping * 1000:.1f} ms ({stripping / hashing:.2f} of the hash)")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
