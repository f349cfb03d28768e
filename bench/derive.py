"""Benchmark of imgshare.derive against libvips; run by hand:

    python bench/derive.py [--runs N] [--images N]

Generates a photo-like 4000x3000 JPEG (smooth gradients, blotchy mid-scale
texture and fine grain, quality 90) in a temporary directory, then prints:

- our time for all four derived files of one image (best of N runs);
- libvips' time (pyvips, same process, operation cache off) for the XGA alone
  and for all four, each made from the file by ``thumbnail``, and our ratios;
- our throughput in images/s with 1 and with 2 threads, and the 2/1 ratio.

Targets: ours(all four) <= 1.0 x vips(XGA alone); 2 threads >= 1.6 x 1 thread.
For context it also times libvips' XGA with one worker thread (ours is
single-threaded; libvips by default splits its pipeline over all CPUs) and
with progressive output (which SPEC section 6 requires of us, and which costs
libjpeg about 4x a baseline encode).  Every figure is a best-of-N on a shared
machine: background load moves them, the two-thread figures most.
pyvips is optional: ``apt-get install -y libvips42 && pip install pyvips``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

from PIL import Image, ImageChops, ImageFilter

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from imgshare.derive import derive_variants  # noqa: E402
from imgshare.domain.naming import VARIANT_BOXES  # noqa: E402

SIZE = (4000, 3000)
MAX_PIXELS = 100_000_000


def make_photo(path: str, seed: int = 0, size: tuple[int, int] = SIZE) -> None:
    """Write a JPEG that compresses like a photograph: per-channel smooth
    gradients, blurred noise at two scales (blotches and texture) and grain.
    """
    width, height = size
    channels = []
    gradients = [
        Image.linear_gradient("L"),
        Image.radial_gradient("L"),
        Image.linear_gradient("L").rotate(90 + 30 * seed),
    ]
    for index, gradient in enumerate(gradients):
        base = gradient.rotate(37 * (index + seed)).resize(size, Image.Resampling.BICUBIC)
        blotches = (
            Image.effect_noise((width // 40, height // 40), 60)
            .filter(ImageFilter.GaussianBlur(2))
            .resize(size, Image.Resampling.BICUBIC)
        )
        texture = (
            Image.effect_noise((width // 4, height // 4), 40)
            .filter(ImageFilter.GaussianBlur(1))
            .resize(size, Image.Resampling.BICUBIC)
        )
        grain = Image.effect_noise(size, 6)
        channel = Image.blend(base, blotches, 0.35)
        channel = ImageChops.add(channel, texture, 1.0, -128)
        channel = ImageChops.add(channel, grain, 1.0, -128)
        channels.append(channel)
    detail = Image.effect_mandelbrot(size, (-2.2, -1.2, 1.0, 1.2), 60)
    channels[1] = Image.blend(channels[1], detail, 0.25)
    Image.merge("RGB", channels).save(path, "JPEG", quality=90)


def measure(runs: int, funcs: dict) -> dict[str, tuple[float, float]]:
    """Best wall-clock and best process CPU time (all threads, so libvips'
    workers count) of each function, over ``runs`` rounds that take the
    functions in turn, so that they all meet the same background load.
    """
    best = {name: (float("inf"), float("inf")) for name in funcs}
    for _ in range(runs):
        for name, func in funcs.items():
            wall, cpu = time.perf_counter(), time.process_time()
            func()
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            best[name] = (min(best[name][0], wall), min(best[name][1], cpu))
    return best


def throughput(paths: list[str], out_dir: str, threads: int) -> float:
    """Images per second deriving every file in ``paths`` with ``threads`` workers."""

    def job(index_path: tuple[int, str]) -> None:
        index, path = index_path
        derive_variants(path, out_dir, f"t{threads}-{index}", MAX_PIXELS)

    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=threads) as pool:
        list(pool.map(job, enumerate(paths)))
    return len(paths) / (time.perf_counter() - start)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=11, help="best of this many runs")
    parser.add_argument("--images", type=int, default=12, help="images per throughput run")
    args = parser.parse_args()

    tmp = tempfile.mkdtemp(prefix="imgshare-bench-")
    try:
        src = os.path.join(tmp, "photo.jpg")
        make_photo(src)
        print(f"source: {SIZE[0]}x{SIZE[1]} JPEG q90, {os.path.getsize(src) / 1e6:.2f} MB")
        out = os.path.join(tmp, "out")
        os.mkdir(out)

        funcs = {"ours": lambda: derive_variants(src, out, "one", MAX_PIXELS)}
        made = derive_variants(src, out, "one", MAX_PIXELS)  # also a warm-up
        print(
            "ours: "
            + ", ".join(f"{d.variant} {d.width}x{d.height} {d.size / 1e3:.0f} kB" for d in made)
        )

        try:
            import pyvips
        except ImportError:
            pyvips = None
            print(
                "pyvips is not importable; for the libvips comparison:\n"
                "    apt-get install -y libvips42 && pip install pyvips"
            )
        else:
            pyvips.cache_set_max(0)  # no cached operations between runs
            concurrency = pyvips.vips_lib.vips_concurrency_get()
            print(
                f"libvips {pyvips.version(0)}.{pyvips.version(1)}.{pyvips.version(2)},"
                f" {concurrency} worker threads by default"
            )

            def vips_one(variant: str, **save) -> None:
                box_w, box_h = VARIANT_BOXES[variant]
                image = pyvips.Image.thumbnail(src, box_w, height=box_h)
                image.jpegsave(os.path.join(out, f"vips-{variant}.jpg"), Q=85, **save)

            def vips_four() -> None:
                for variant in VARIANT_BOXES:
                    vips_one(variant)

            def vips_xga_one_thread() -> None:
                pyvips.vips_lib.vips_concurrency_set(1)
                try:
                    vips_one("xga")
                finally:
                    pyvips.vips_lib.vips_concurrency_set(concurrency)

            vips_four()  # warm-up
            funcs["vips_xga"] = lambda: vips_one("xga")
            funcs["vips_all"] = vips_four
            funcs["vips_xga_1"] = vips_xga_one_thread
            funcs["vips_xga_progressive"] = lambda: vips_one("xga", interlace=True)
        times = measure(args.runs, funcs)

        sources = []
        for index in range(args.images):
            copy = os.path.join(tmp, f"src-{index}.jpg")
            shutil.copyfile(src, copy)
            sources.append(copy)
        throughput(sources[:2], out, 2)  # warm-up
        one_thread = two_threads = 0.0
        for _ in range(3):
            one_thread = max(one_thread, throughput(sources, out, 1))
            two_threads = max(two_threads, throughput(sources, out, 2))

        def line(label: str, name: str) -> None:
            wall, cpu = times[name]
            print(f"{label:<44}{wall * 1e3:7.1f} ms   (CPU {cpu * 1e3:6.1f} ms)")

        ours = times["ours"][0]
        print()
        print(f"=== measured (best of {args.runs}, wall clock; CPU summed over threads) ===")
        line("ours, all four derivatives:", "ours")
        if pyvips is not None:
            vips_xga, vips_all = times["vips_xga"][0], times["vips_all"][0]
            line("libvips, XGA alone:", "vips_xga")
            line("libvips, all four (thumbnail each):", "vips_all")
            line("libvips, XGA alone, 1 worker thread:", "vips_xga_1")
            line("libvips, XGA alone, progressive:", "vips_xga_progressive")
            print(
                f"{'ratio ours(all four) / vips(XGA):':<44}{ours / vips_xga:7.2f}  (target <= 1.0)"
            )
            print(f"{'ratio ours(all four) / vips(all four):':<44}{ours / vips_all:7.2f}")
            print(
                f"{'ratio ours / vips(XGA, 1 worker thread):':<44}"
                f"{ours / times['vips_xga_1'][0]:7.2f}"
            )
        print(f"{'throughput, 1 thread:':<44}{one_thread:7.2f} images/s")
        print(f"{'throughput, 2 threads:':<44}{two_threads:7.2f} images/s")
        print(
            f"{'ratio 2 threads / 1 thread:':<44}{two_threads / one_thread:7.2f}  (target >= 1.6)"
        )
        print(f"(CPUs: {os.cpu_count()})")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
