"""The faster derivation keeps SPEC section 6's quality: behaviour only, no timings.

The photo-like test image comes from bench/derive.py's ``make_photo`` (smooth
gradients, blotches, texture and grain), at a small size so the tests stay fast.
"""

from __future__ import annotations

import atexit
import importlib.util
import io
import os
import shutil
import tempfile

import numpy
from PIL import Image, ImageOps
from twisted.trial import unittest

from imgshare import derive, memory
from imgshare.derive import derive_variants
from imgshare.domain.naming import VARIANT_BOXES, fit_size

LIMIT = 100_000_000
VARIANTS = list(VARIANT_BOXES)
BENCH = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench", "derive.py"
)


def bench_module():
    spec = importlib.util.spec_from_file_location("imgshare_bench_derive", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def psnr(image: Image.Image, reference: Image.Image) -> float:
    a = numpy.asarray(image.convert("RGB"), dtype=numpy.float64)
    b = numpy.asarray(reference.convert("RGB"), dtype=numpy.float64)
    return float(10 * numpy.log10(255.0**2 / numpy.mean((a - b) ** 2)))


_PHOTO: list = []


def photo_fixture() -> tuple[str, Image.Image, list]:
    """(source path, its full-size upright decode, the Derived files), made once
    per test process in a temporary folder removed at exit."""
    if not _PHOTO:
        folder = tempfile.mkdtemp(prefix="derive-quality-")
        atexit.register(shutil.rmtree, folder, True)
        plain = os.path.join(folder, "plain.jpg")
        bench_module().make_photo(plain, seed=1, size=(1600, 1200))
        exif = Image.Exif()
        exif[0x0112] = 6  # shown rotated 90 degrees clockwise
        src = os.path.join(folder, "photo.jpg")
        with Image.open(plain) as image:
            image.save(src, "JPEG", quality=90, exif=exif)
        out = os.path.join(folder, "out")
        os.makedirs(out)
        made = derive_variants(src, out, "p", LIMIT)
        with Image.open(src) as image:
            upright = ImageOps.exif_transpose(image).convert("RGB")
        _PHOTO.extend([src, upright, made])
    src, upright, made = _PHOTO
    return src, upright, made


class PhotoQualityTests(unittest.TestCase):
    """A 1600x1200 photo stored on its side (EXIF orientation 6)."""

    def setUp(self):
        self.src, self.upright, self.made = photo_fixture()

    def reference(self, variant: str) -> Image.Image:
        """The high-quality reference: LANCZOS from the full-size upright decode."""
        size = fit_size(self.upright.size, VARIANT_BOXES[variant])
        return self.upright.resize(size, Image.Resampling.LANCZOS)

    def test_oriented_sizes(self):
        """The files are upright: 1600x1200 on its side fits the boxes as 1200x1600."""
        self.assertEqual(self.upright.size, (1200, 1600))
        sizes = [(d.variant, d.width, d.height) for d in self.made]
        self.assertEqual(
            sizes, [("xga", 576, 768), ("vga", 360, 480), ("qvga", 180, 240), ("thumb", 120, 160)]
        )
        for d in self.made:
            with Image.open(d.path) as image:
                self.assertEqual(image.size, (d.width, d.height))
                self.assertNotIn(0x0112, image.getexif())  # no orientation left to apply

    def test_progressive_with_quality_85_tables(self):
        """Every file is a progressive JPEG whose quantisation tables are the
        ones libjpeg makes for quality 85 (and not those of 84 or 86)."""
        tables = {}
        for quality in (84, 85, 86):
            buffer = io.BytesIO()
            Image.new("RGB", (64, 64)).save(buffer, "JPEG", quality=quality)
            with Image.open(buffer) as image:
                tables[quality] = image.quantization
        self.assertNotEqual(tables[84], tables[85])
        self.assertNotEqual(tables[86], tables[85])
        for d in self.made:
            with Image.open(d.path) as image:
                self.assertEqual(image.format, "JPEG")
                self.assertTrue(image.info.get("progressive"), d.variant)
                self.assertEqual(image.quantization, tables[85], d.variant)

    def test_within_a_psnr_floor_of_the_reference(self):
        """Each file is within 1 dB (PSNR) of what the LANCZOS reference itself
        scores once encoded the same way: the DCT-scaled decode, the BOX first
        step and the cascade cost no more than that."""
        for d in self.made:
            reference = self.reference(d.variant)
            encoded = io.BytesIO()
            reference.save(encoded, "JPEG", **derive.JPEG_OPTIONS)
            with Image.open(encoded) as image:
                floor = psnr(image, reference) - 1.0
            with Image.open(d.path) as image:
                ours = psnr(image, reference)
                # The same file turned the wrong way scores far lower: the
                # comparison does see orientation.
                wrong = psnr(image.transpose(Image.Transpose.ROTATE_180), reference)
            self.assertGreater(ours, floor, d.variant)
            self.assertGreater(ours, 27.0, d.variant)
            self.assertLess(wrong, ours - 10, d.variant)


class FineDetailTests(unittest.TestCase):
    def test_stripes_too_fine_for_the_size_average_out(self):
        """Vertical stripes with a 3-pixel period, finer than any derived size
        can show, come out as flat grey (no moire).  (A PNG: what the resampler
        does alone.  A JPEG's DCT-scaled decode lets part of such a pattern
        through, as bench/derive.py's notes say.)"""
        folder = self.mktemp()
        os.makedirs(folder)
        row = numpy.array([0, 255, 128] * 800, dtype=numpy.uint8)  # 2400 pixels wide
        stripes = Image.fromarray(numpy.tile(row, (1800, 1))).convert("RGB")
        src = os.path.join(folder, "stripes.png")
        stripes.save(src)
        made = derive_variants(src, folder, "s", LIMIT)
        for d in made:
            with Image.open(d.path) as image:
                ours = numpy.asarray(image.convert("L"), dtype=numpy.float64)
            self.assertLess(ours.std(), 6, d.variant)
            if d.variant in ("xga", "vga"):
                # The pattern is there to be lost: point sampling and a plain
                # area average (BOX) at these ratios keep it as moire.
                for naive in (Image.Resampling.NEAREST, Image.Resampling.BOX):
                    kept = numpy.asarray(stripes.resize((d.width, d.height), naive).convert("L"))
                    self.assertGreater(kept.std(), 20, (d.variant, naive))
            self.assertLess(abs(ours.mean() - 127.7), 3, d.variant)


class DecodeScaleTests(unittest.TestCase):
    def decoded_size(self, size, orientation=1):
        path = os.path.join(self.mktemp() + ".jpg")
        exif = Image.Exif()
        exif[0x0112] = orientation
        Image.new("RGB", size, (10, 120, 200)).save(path, "JPEG", exif=exif)
        with open(path, "rb") as fp:
            image, upright, box, _ = derive._decode(fp, path, LIMIT)
        return image.size, upright, box

    def test_smallest_dct_scale_covering_xga(self):
        """A JPEG is decoded at the smallest of 1/1, 1/2, 1/4, 1/8 that still
        covers the XGA size in both directions, judged upright."""
        # 4000x3000 -> XGA 1024x768: 1/2 (2000x1500) covers, 1/4 (1000x750) does not.
        self.assertEqual(self.decoded_size((4000, 3000))[0], (2000, 1500))
        # 4100x3075 -> 1/4 is 1025x769 (rounded up), which covers 1024x768.
        self.assertEqual(self.decoded_size((4100, 3075))[0], (1025, 769))
        # 2000x1500 -> 1/2 (1000x750) is short of 1024x768: decoded whole.
        self.assertEqual(self.decoded_size((2000, 1500))[0], (2000, 1500))
        # On its side, 3000x4000 stored is 4000x3000 shown: still 1/2.
        image_size, upright, box = self.decoded_size((3000, 4000), orientation=6)
        self.assertEqual((image_size, upright), ((2000, 1500), (4000, 3000)))
        self.assertEqual(box, (0, 0, 2000, 1500))

    def test_rounded_up_scale_keeps_the_geometry(self):
        """4001x3001 at 1/2 decodes to 2001x1501 pixels of which the last row
        and column stand for half a source pixel: the box says so."""
        image_size, upright, box = self.decoded_size((4001, 3001))
        self.assertEqual((image_size, upright), ((2001, 1501), (4001, 3001)))
        self.assertEqual(box, (0, 0, 2000.5, 1500.5))


class HelperThreadTests(unittest.TestCase):
    def setUp(self):
        self.folder = self.mktemp()
        os.makedirs(self.folder)

    def source(self, image: Image.Image, name: str) -> str:
        path = os.path.join(self.folder, name)
        image.save(path)
        return path

    def derive_both(self, path: str) -> tuple[list, list]:
        with_helper = os.path.join(self.folder, "helper")
        alone = os.path.join(self.folder, "alone")
        os.makedirs(with_helper, exist_ok=True)
        os.makedirs(alone, exist_ok=True)
        return (
            derive_variants(path, with_helper, "x", LIMIT),
            derive_variants(path, alone, "x", LIMIT, helper=False),
        )

    def test_same_files_with_and_without_the_helper(self):
        """Where the first resize splits on an exact source row (4000x3000 ->
        XGA, any PNG reduced by a power of two) the files are the same bytes;
        elsewhere (a CMYK JPEG to 1024x731) the pixels differ by one level at most."""
        noise = Image.effect_noise((1000, 750), 60).resize((4000, 3000)).convert("RGB")
        for path in (
            self.source(noise, "photo.jpg"),
            self.source(noise.resize((2048, 1536)).convert("L"), "grey.png"),
        ):
            helped, alone = self.derive_both(path)
            for a, b in zip(helped, alone, strict=True):
                with open(a.path, "rb") as fa, open(b.path, "rb") as fb:
                    self.assertEqual(fa.read(), fb.read(), (path, a.variant))
        cmyk = self.source(noise.resize((2100, 1500)).convert("CMYK"), "cmyk.jpg")
        helped, alone = self.derive_both(cmyk)
        self.assertEqual(
            [(d.width, d.height) for d in helped], [(d.width, d.height) for d in alone]
        )
        self.assertEqual((helped[0].width, helped[0].height), (1024, 731))
        with open(cmyk, "rb") as fp:
            image, upright, box, _ = derive._decode(fp, cmyk, LIMIT)
        split = derive._resize_first(image, (1024, 731), box, derive._helper_pool())
        whole = derive._resize_first(image, (1024, 731), box, None)
        difference = numpy.abs(
            numpy.asarray(split, dtype=numpy.int16) - numpy.asarray(whole, dtype=numpy.int16)
        )
        self.assertLessEqual(int(difference.max()), 1)

    def test_modes_with_alpha_are_not_split(self):
        """An RGBA image (which Pillow premultiplies before resizing) is resized
        in one piece, in the calling thread."""
        calls = []
        pool = derive._helper_pool()
        real_submit = pool.submit
        self.patch(pool, "submit", lambda *a, **k: calls.append(a[0]) or real_submit(*a, **k))
        path = self.source(Image.new("RGBA", (2400, 1800), (255, 0, 0, 128)), "alpha.png")
        derive_variants(path, self.folder, "a", LIMIT)
        self.assertEqual(calls, [derive._cascade])
        with Image.open(os.path.join(self.folder, "xga-a.jpg")) as image:
            red, green, blue = image.getpixel((500, 400))
        self.assertGreater(red, 250)  # half-transparent red on white
        self.assertTrue(120 < green < 136 and 120 < blue < 136, (red, green, blue))

    def test_failure_in_the_helper_propagates(self):
        """An error raised in the helper thread reaches the caller; the XGA,
        written before, stays; no temporary file is left."""

        def broken(first, sizes):
            raise OSError("no memory for the cascade")

        self.patch(derive, "_cascade", broken)
        path = self.source(Image.new("RGB", (2000, 1500), (0, 90, 0)), "a.jpg")
        error = self.assertRaises(OSError, derive_variants, path, self.folder, "f", LIMIT)
        self.assertEqual(str(error), "no memory for the cascade")
        self.assertEqual(sorted(os.listdir(self.folder)), ["a.jpg", "xga-f.jpg"])

    def test_broken_image_still_broken_with_the_helper(self):
        """A JPEG cut short is still a BrokenImage, and writes nothing."""
        photo = os.path.join(self.folder, "whole.jpg")
        Image.effect_noise((2000, 1500), 50).convert("RGB").save(photo, "JPEG")
        with open(photo, "rb") as fh:
            data = fh.read()
        cut = os.path.join(self.folder, "cut.jpg")
        with open(cut, "wb") as fh:
            fh.write(data[: len(data) // 2])
        out = os.path.join(self.folder, "out")
        os.makedirs(out)
        self.assertRaises(derive.BrokenImage, derive_variants, cut, out, "c", LIMIT)
        self.assertEqual(os.listdir(out), [])


class BufferStockTests(unittest.TestCase):
    def test_tune_keeps_a_bounded_stock_of_pillow_blocks(self):
        """memory.tune has Pillow allocate images in 1 MiB blocks and keep at
        most 48 freed ones (48 MiB), whatever it was set to before."""
        self.addCleanup(Image.core.set_blocks_max, Image.core.get_blocks_max())
        Image.core.set_blocks_max(0)
        memory.tune()
        self.assertEqual(Image.core.get_block_size(), memory.PILLOW_BLOCK_SIZE)
        self.assertEqual(Image.core.get_blocks_max(), memory.PILLOW_BLOCKS_MAX)
        self.assertLessEqual(memory.PILLOW_BLOCK_SIZE * memory.PILLOW_BLOCKS_MAX, 48 * 1024 * 1024)
        # Images of any size still work in 1 MiB blocks, also lines longer than a block.
        wide = Image.new("RGB", (300_000, 2), (1, 2, 3))
        self.assertEqual(wide.getpixel((299_999, 1)), (1, 2, 3))
        big = Image.new("L", (4000, 3000), 7)
        self.assertEqual(big.resize((100, 75), Image.Resampling.BOX).getpixel((99, 74)), 7)
