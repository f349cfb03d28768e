"""Tests for imgshare.derive: the four derived JPEGs of SPEC section 6."""

from __future__ import annotations

import io
import os
import struct
from concurrent.futures import ThreadPoolExecutor
from unittest import mock

import attrs
from PIL import Image, ImageChops, ImageCms, ImageFile
from twisted.trial import unittest

from imgshare import derive
from imgshare.derive import BrokenImage, Derived, derive_variants, fit_size
from imgshare.domain import naming, sniff
from imgshare.domain.naming import VARIANT_BOXES

RED = (255, 0, 0)
GREEN = (0, 255, 0)
BLUE = (0, 0, 255)
WHITE = (255, 255, 255)
VARIANTS = ["xga", "vga", "qvga", "thumb"]
LIMIT = 100_000_000

# sRGB primaries adapted to D50, as an ICC v2 matrix/TRC profile states them.
SRGB_RED_XYZ = (0.4361, 0.2225, 0.0139)
SRGB_GREEN_XYZ = (0.3851, 0.7169, 0.0971)
SRGB_BLUE_XYZ = (0.1431, 0.0606, 0.7141)


def _s15f16(value: float) -> bytes:
    return struct.pack(">i", round(value * 65536))


def _xyz_tag(x: float, y: float, z: float) -> bytes:
    return b"XYZ " + b"\0" * 4 + _s15f16(x) + _s15f16(y) + _s15f16(z)


def rgb_icc_profile(red_xyz, green_xyz, blue_xyz, gamma=2.2) -> bytes:
    """A minimal ICC v2 RGB display profile with the given primaries.

    Pillow can only create sRGB, LAB and XYZ profiles itself, so the tests
    build their own: with the sRGB red and green primaries exchanged, a pixel
    stored as pure red means sRGB green, which makes it plain to see whether
    the embedded profile was applied.
    """
    description = b"IMGSHARE test RGB\0"
    tags = [
        (
            b"desc",
            b"desc"
            + b"\0" * 4
            + struct.pack(">I", len(description))
            + description
            + b"\0" * 8  # no Unicode description
            + b"\0" * 70,  # no ScriptCode description
        ),
        (b"wtpt", _xyz_tag(0.9642, 1.0, 0.8249)),
        (b"rXYZ", _xyz_tag(*red_xyz)),
        (b"gXYZ", _xyz_tag(*green_xyz)),
        (b"bXYZ", _xyz_tag(*blue_xyz)),
        (b"cprt", b"text" + b"\0" * 4 + b"public domain\0"),
    ]
    curve = b"curv" + b"\0" * 4 + struct.pack(">IH", 1, round(gamma * 256))
    tags += [(b"rTRC", curve), (b"gTRC", curve), (b"bTRC", curve)]
    offset = 128 + 4 + 12 * len(tags)
    table = struct.pack(">I", len(tags))
    data = b""
    for signature, body in tags:
        body += b"\0" * (-len(body) % 4)
        table += signature + struct.pack(">II", offset + len(data), len(body))
        data += body
    header = (
        struct.pack(">I", offset + len(data))
        + b"\0" * 4  # preferred CMM
        + bytes([2, 0x10, 0, 0])  # version 2.1
        + b"mntr"
        + b"RGB "
        + b"XYZ "
        + b"\0" * 12  # date
        + b"acsp"
        + b"\0" * 28  # platform, flags, manufacturer, model, attributes, intent
        + _s15f16(0.9642)
        + _s15f16(1.0)
        + _s15f16(0.8249)
        + b"\0" * 48  # creator, ID, reserved
    )
    assert len(header) == 128
    return header + table + data


SWAPPED_RED_GREEN_PROFILE = rgb_icc_profile(SRGB_GREEN_XYZ, SRGB_RED_XYZ, SRGB_BLUE_XYZ)

# What EXIF orientation N asks a viewer to do to the stored pixels, and the
# inverse: what a camera did to the upright scene when it stored them.
SHOW = {
    1: None,
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
STORE = {
    1: None,
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_90,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_270,
}


class DeriveTestCase(unittest.TestCase):
    def setUp(self):
        self.src_dir = self.mktemp()
        os.makedirs(self.src_dir)
        self.out_dir = self.mktemp()
        os.makedirs(self.out_dir)

    def save(self, image, name, format=None, **params):
        path = os.path.join(self.src_dir, name)
        image.save(path, format, **params)
        return path

    def derive(self, path, stem="pic", max_pixels=LIMIT):
        return derive_variants(path, self.out_dir, stem, max_pixels)

    def assertSizes(self, derived, sizes):
        self.assertEqual([(d.width, d.height) for d in derived], sizes)
        for d in derived:
            with Image.open(d.path) as image:
                self.assertEqual(image.size, (d.width, d.height))

    def assertColour(self, actual, expected, tolerance=8):
        self.assertEqual(len(actual), len(expected), (actual, expected))
        for got, want in zip(actual, expected, strict=True):
            self.assertTrue(abs(got - want) <= tolerance, f"{actual} is not about {expected}")

    def centreColours(self, derived):
        colours = []
        for d in derived:
            with Image.open(d.path) as image:
                self.assertEqual(image.format, "JPEG")
                self.assertEqual(image.mode, "RGB")
                colours.append(image.getpixel((image.width // 2, image.height // 2)))
        return colours

    def assertUniform(self, path, colour, tolerance=8):
        derived = self.derive(path)
        for found in self.centreColours(derived):
            self.assertColour(found, colour, tolerance)
        return derived


class LayoutTests(DeriveTestCase):
    def test_variant_order(self):
        """VARIANT_BOXES lists XGA, VGA, QVGA, thumb with the SPEC's boxes, in cascade order."""
        self.assertEqual(list(VARIANT_BOXES), VARIANTS)
        self.assertEqual(
            list(VARIANT_BOXES.values()), [(1024, 768), (640, 480), (320, 240), (160, 160)]
        )

    def test_large_photo_fits_boxes(self):
        """A 4000x3000 JPEG gives 1024x768, 640x480, 320x240 and 160x120 files named
        <variant>-<stem>.jpg, and each Derived states its file's path, size and pixels."""
        path = self.save(Image.new("RGB", (4000, 3000), (40, 90, 160)), "big.jpg")
        derived = self.derive(path, stem="20260214_fountain")
        self.assertEqual([d.variant for d in derived], VARIANTS)
        self.assertSizes(derived, [(1024, 768), (640, 480), (320, 240), (160, 120)])
        for d in derived:
            self.assertEqual(
                d.path, os.path.join(self.out_dir, f"{d.variant}-20260214_fountain.jpg")
            )
            self.assertEqual(d.size, os.path.getsize(d.path))
        self.assertEqual(
            sorted(os.listdir(self.out_dir)),
            sorted(f"{v}-20260214_fountain.jpg" for v in VARIANTS),
        )

    def test_derived_is_frozen(self):
        """Derived is an immutable attrs value class."""
        d = Derived("xga", "/x", 1, 2, 3)
        self.assertEqual(d, Derived(variant="xga", path="/x", width=1, height=2, size=3))
        self.assertRaises(attrs.exceptions.FrozenInstanceError, setattr, d, "width", 5)

    def test_tall_image(self):
        """A portrait 3000x4000 image is bound by the boxes' heights."""
        path = self.save(Image.new("RGB", (3000, 4000), RED), "tall.jpg")
        self.assertSizes(self.derive(path), [(576, 768), (360, 480), (180, 240), (120, 160)])

    def test_small_image_never_upscaled(self):
        """A 100x50 image keeps its size in every variant: nothing is ever enlarged."""
        path = self.save(Image.new("RGB", (100, 50), RED), "small.png")
        self.assertSizes(self.derive(path), [(100, 50)] * 4)

    def test_medium_image_only_thumb_shrinks(self):
        """A 200x100 image fits the XGA, VGA and QVGA boxes as it is; only the thumb
        (160x160 box) is smaller, at 160x80."""
        path = self.save(Image.new("RGB", (200, 100), RED), "medium.png")
        self.assertSizes(self.derive(path), [(200, 100)] * 3 + [(160, 80)])

    def test_repeated_size_is_encoded_once(self):
        """Where a variant has the size of the one before (an original smaller than
        both boxes), that JPEG is encoded once and given both names: the same bytes an
        encode of its own would give, one encode fewer."""
        noise = Image.frombytes("RGB", (400, 300), os.urandom(400 * 300 * 3))
        path = self.save(noise, "noise.png")
        with mock.patch("imgshare.derive.Image.Image.save", autospec=True,
                        side_effect=Image.Image.save) as save:
            derived = self.derive(path)
        self.assertSizes(derived, [(400, 300), (400, 300), (320, 240), (160, 120)])
        self.assertEqual(save.call_count, 3)
        xga, vga = (open(d.path, "rb").read() for d in derived[:2])
        self.assertEqual(xga, vga)
        self.assertEqual(derived[1].size, len(vga))
        again = os.path.join(self.out_dir, "again.jpg")
        with Image.open(path) as image:
            image.convert("RGB").save(again, "JPEG", quality=85, progressive=True)
        self.assertEqual(open(again, "rb").read(), xga, "what a second encode would have written")
        path = self.save(Image.new("RGB", (100, 50), RED), "tiny.png")
        with mock.patch("imgshare.derive.Image.Image.save", autospec=True,
                        side_effect=Image.Image.save) as save:
            derived = self.derive(path, stem="tiny")
        self.assertEqual(save.call_count, 1)
        self.assertEqual(len({open(d.path, "rb").read() for d in derived}), 1)

    def test_one_pixel_wide(self):
        """A 1x3000 strip stays 1 px wide and is bound by each box's height."""
        path = self.save(Image.new("RGB", (1, 3000), RED), "strip.png")
        self.assertSizes(self.derive(path), [(1, 768), (1, 480), (1, 240), (1, 160)])

    def test_one_pixel_high(self):
        """A 3000x1 strip keeps 1 px of height (never 0) and is bound by each box's width."""
        path = self.save(Image.new("RGB", (3000, 1), RED), "line.png")
        self.assertSizes(self.derive(path), [(1024, 1), (640, 1), (320, 1), (160, 1)])

    def test_fit_size_matches_thumbnail(self):
        """fit_size rounds like Image.thumbnail, never enlarges, keeps >= 1 px, and
        fits inside the box."""
        sizes = [(4000, 3000), (3000, 4000), (1, 5000), (5000, 1), (1025, 769), (777, 333)]
        sizes += [(100, 50), (1024, 768), (1023, 2000), (2001, 1499), (161, 161), (5, 7)]
        for size in sizes:
            for box in VARIANT_BOXES.values():
                image = Image.new("L", size)
                image.thumbnail(box)
                fitted = fit_size(size, box)
                self.assertEqual(fitted, image.size, (size, box))
                self.assertTrue(fitted[0] <= max(box[0], 1) and fitted[1] <= box[1])
                self.assertTrue(fitted[0] <= size[0] and fitted[1] <= size[1])
                self.assertTrue(min(fitted) >= 1)

    def test_progressive_quality_85(self):
        """Every file is a progressive JPEG whose quantisation tables are those of
        quality 85."""
        path = self.save(Image.new("RGB", (1200, 900), (10, 120, 200)), "p.jpg")
        reference = io.BytesIO()
        Image.new("RGB", (16, 16)).save(reference, "JPEG", quality=85)
        with Image.open(reference) as ref:
            tables = ref.quantization
        for d in self.derive(path):
            with Image.open(d.path) as image:
                self.assertTrue(image.info.get("progressive") or image.info.get("progression"))
                self.assertEqual(image.quantization, tables)
                self.assertNotIn("exif", image.info)

    def test_stem_must_be_plain(self):
        """A stem that would put the files outside out_dir is refused with ValueError."""
        path = self.save(Image.new("RGB", (50, 50), RED), "a.png")
        for stem in ["", "../x", "a/b", ".."]:
            self.assertRaises(ValueError, self.derive, path, stem=stem)
        self.assertEqual(os.listdir(self.out_dir), [])

    def test_rederive_replaces(self):
        """Deriving again with the same stem replaces the files in place."""
        path = self.save(Image.new("RGB", (50, 50), RED), "a.png")
        self.derive(path)
        path = self.save(Image.new("RGB", (60, 30), BLUE), "b.png")
        derived = self.derive(path)
        self.assertSizes(derived, [(60, 30)] * 4)
        self.assertColour(self.centreColours(derived)[0], BLUE)
        self.assertEqual(len(os.listdir(self.out_dir)), 4)


class ModeTests(DeriveTestCase):
    """Every decoded mode comes out as an RGB JPEG with the right colour."""

    def test_rgb_jpeg(self):
        """An RGB JPEG keeps its colour."""
        self.assertUniform(self.save(Image.new("RGB", (300, 200), RED), "a.jpg"), RED)

    def test_grey_jpeg(self):
        """A greyscale (L) JPEG becomes an RGB JPEG of the same grey."""
        path = self.save(Image.new("L", (300, 200), 128), "a.jpg")
        self.assertUniform(path, (128, 128, 128))

    def test_cmyk_jpeg(self):
        """A CMYK JPEG (Pillow writes Adobe-style inverted CMYK) of 0/100/100/0 becomes red."""
        path = self.save(Image.new("CMYK", (300, 200), (0, 255, 255, 0)), "a.jpg")
        with Image.open(path) as image:
            self.assertEqual(image.mode, "CMYK")
            self.assertIn("adobe", image.info)
        self.assertUniform(path, RED)

    def test_bilevel_png(self):
        """A mode "1" PNG of white pixels becomes white RGB."""
        self.assertUniform(self.save(Image.new("1", (300, 200), 1), "a.png"), WHITE)

    def test_grey_png(self):
        """A mode "L" PNG becomes the same grey in RGB."""
        self.assertUniform(self.save(Image.new("L", (300, 200), 60), "a.png"), (60, 60, 60))

    def test_grey_alpha_png(self):
        """An LA PNG at half opacity is flattened onto white: black at alpha 128 gives mid grey."""
        path = self.save(Image.new("LA", (300, 200), (0, 128)), "a.png")
        self.assertUniform(path, (127, 127, 127))

    def test_palette_png(self):
        """A palette (P) PNG without transparency becomes its palette colour."""
        image = Image.new("P", (300, 200), 1)
        image.putpalette([0, 0, 0, 20, 200, 90] + [0] * 762)
        self.assertUniform(self.save(image, "a.png"), (20, 200, 90))

    def test_palette_png_transparency(self):
        """A palette PNG whose tRNS makes its only used entry transparent is flattened to white."""
        image = Image.new("P", (300, 200), 1)
        image.putpalette([0, 0, 0, 20, 200, 90] + [0] * 762)
        path = self.save(image, "a.png", transparency=1)
        with Image.open(path) as reopened:
            self.assertEqual(reopened.mode, "P")
            self.assertIn("transparency", reopened.info)
        self.assertUniform(path, WHITE)

    def test_palette_alpha(self):
        """A PA image (palette plus alpha) is flattened onto white."""
        image = Image.new("PA", (30, 20), (1, 0))
        image.putpalette([0, 0, 0, 20, 200, 90] + [0] * 762)
        flat = derive._to_srgb(derive._working_mode(image), None)
        self.assertEqual((flat.mode, flat.getpixel((5, 5))), ("RGB", WHITE))
        image.putalpha(255)
        flat = derive._to_srgb(derive._working_mode(image), None)
        self.assertEqual(flat.getpixel((5, 5)), (20, 200, 90))

    def test_rgba_png(self):
        """An RGBA PNG of half-opaque red is composited onto white: light red."""
        path = self.save(Image.new("RGBA", (300, 200), (255, 0, 0, 128)), "a.png")
        self.assertUniform(path, (255, 127, 127))

    def test_fully_transparent_png_is_white(self):
        """A fully transparent PNG (black, alpha 0) derives to white pixels everywhere."""
        path = self.save(Image.new("RGBA", (1500, 1000), (0, 0, 0, 0)), "a.png")
        for d in self.derive(path):
            with Image.open(d.path) as image:
                self.assertEqual(image.mode, "RGB")
                low = [band_low for band_low, _ in image.getextrema()]
                self.assertTrue(min(low) >= 250, low)

    def test_16bit_grey_png(self):
        """A 16-bit grey PNG (decoded as I;16) is scaled to 8 bits, not clipped:
        128*257 becomes 128 and 65535 white."""
        path = self.save(Image.new("I;16", (300, 200), 128 * 257), "a.png")
        with Image.open(path) as image:
            self.assertTrue(image.mode.startswith("I;16"), image.mode)
        self.assertUniform(path, (128, 128, 128))
        path = self.save(Image.new("I;16", (300, 200), 65535), "b.png")
        self.assertUniform(path, WHITE)

    def test_wide_int_modes(self):
        """In-memory I;16B, I;16L and I images (16-bit range) and F (0..255 range)
        become the matching 8-bit grey in RGB."""
        for mode, value in [("I;16B", 128 * 257), ("I;16L", 128 * 257), ("I", 128 * 257)]:
            image = Image.new(mode, (8, 8), value)
            working = derive._working_mode(image)
            rgb = derive._to_srgb(working, None)
            self.assertEqual((rgb.mode, rgb.getpixel((1, 1))), ("RGB", (128, 128, 128)), mode)
        rgb = derive._to_srgb(derive._working_mode(Image.new("F", (8, 8), 128.0)), None)
        self.assertEqual((rgb.mode, rgb.getpixel((1, 1))), ("RGB", (128, 128, 128)))

    def test_bmp(self):
        """A BMP is accepted and keeps its colour."""
        self.assertUniform(self.save(Image.new("RGB", (300, 200), BLUE), "a.bmp"), BLUE)

    def test_webp_with_alpha(self):
        """A lossless RGBA WEBP that is fully transparent comes out white."""
        path = self.save(Image.new("RGBA", (300, 200), (0, 0, 255, 0)), "a.webp", lossless=True)
        self.assertUniform(path, WHITE)

    def test_animated_webp_first_frame(self):
        """An animated WEBP derives from its first frame only (red, not green or blue)."""
        frames = [Image.new("RGB", (300, 200), colour) for colour in (RED, GREEN, BLUE)]
        path = self.save(
            frames[0],
            "anim.webp",
            save_all=True,
            append_images=frames[1:],
            duration=100,
            lossless=True,
        )
        with Image.open(path) as image:
            self.assertEqual(image.n_frames, 3)
        self.assertUniform(path, RED)

    def test_mpo(self):
        """A multi-picture JPEG (MPO, as some phones write) derives from its first picture."""
        first, second = Image.new("RGB", (800, 600), RED), Image.new("RGB", (800, 600), BLUE)
        path = self.save(first, "a.jpg", "MPO", save_all=True, append_images=[second])
        with Image.open(path) as image:
            self.assertEqual(image.format, "MPO")
        derived = self.assertUniform(path, RED)
        self.assertSizes(derived, [(800, 600), (640, 480), (320, 240), (160, 120)])


class ColourProfileTests(DeriveTestCase):
    def test_icc_profile_applied_png(self):
        """A PNG tagged with a profile whose red and green primaries are exchanged
        relative to sRGB, storing pure red, is converted from that profile: it comes
        out sRGB green."""
        image = Image.new("RGB", (300, 200), RED)
        path = self.save(image, "a.png", icc_profile=SWAPPED_RED_GREEN_PROFILE)
        with Image.open(path) as reopened:
            self.assertEqual(reopened.info["icc_profile"], SWAPPED_RED_GREEN_PROFILE)
        self.assertUniform(path, GREEN, tolerance=12)

    def test_icc_profile_applied_jpeg(self):
        """A JPEG (large enough to be DCT-scaled) with the same red/green-exchanged
        profile comes out green too."""
        image = Image.new("RGB", (2400, 1800), RED)
        path = self.save(image, "a.jpg", quality=95, icc_profile=SWAPPED_RED_GREEN_PROFILE)
        self.assertUniform(path, GREEN, tolerance=12)

    def test_icc_profile_with_alpha(self):
        """A half-transparent pixel under the exchanged profile is flattened onto white
        and then converted: light green."""
        image = Image.new("RGBA", (300, 200), (255, 0, 0, 128))
        path = self.save(image, "a.png", icc_profile=SWAPPED_RED_GREEN_PROFILE)
        self.assertUniform(path, (127, 255, 127), tolerance=14)

    def test_srgb_profile_keeps_colours(self):
        """A JPEG tagged with an sRGB profile goes through the conversion and keeps its colours."""
        srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
        path = self.save(Image.new("RGB", (300, 200), (200, 100, 50)), "a.jpg", icc_profile=srgb)
        self.assertUniform(path, (200, 100, 50))

    def test_broken_profile_ignored(self):
        """An embedded ICC profile that cannot be parsed is ignored: the pixels are
        taken as sRGB and the image is not broken."""
        path = self.save(Image.new("RGB", (300, 200), RED), "a.png", icc_profile=b"not a profile")
        self.assertUniform(path, RED)

    def test_profile_for_other_colour_space_ignored(self):
        """An RGB profile attached to a grey image does not fit its mode and is ignored."""
        image = Image.new("L", (300, 200), 90)
        path = self.save(image, "a.png", icc_profile=SWAPPED_RED_GREEN_PROFILE)
        self.assertUniform(path, (90, 90, 90))


class OrientationTests(DeriveTestCase):
    """EXIF orientation: every stored orientation derives to the upright picture."""

    UPRIGHT = (4000, 2000)  # large enough that JPEGs are DCT-scaled

    def upright(self):
        """A white landscape picture, red block top left, blue block top right."""
        width, height = self.UPRIGHT
        image = Image.new("RGB", self.UPRIGHT, WHITE)
        image.paste(RED, (0, 0, width // 4, height // 4))
        image.paste(BLUE, (width - width // 4, 0, width, height // 4))
        return image

    def check_upright(self, derived):
        expected = [(1024, 512), (640, 320), (320, 160), (160, 80)]
        self.assertSizes(derived, expected)
        for d in derived:
            with Image.open(d.path) as image:
                w, h = image.size
                corners = {
                    "top left": image.getpixel((w // 16, h // 16)),
                    "top right": image.getpixel((w - 1 - w // 16, h // 16)),
                    "bottom left": image.getpixel((w // 16, h - 1 - h // 16)),
                    "bottom right": image.getpixel((w - 1 - w // 16, h - 1 - h // 16)),
                }
            self.assertColour(corners["top left"], RED, 24)
            self.assertColour(corners["top right"], BLUE, 24)
            self.assertColour(corners["bottom left"], WHITE, 24)
            self.assertColour(corners["bottom right"], WHITE, 24)

    def stored(self, orientation):
        method = STORE[orientation]
        image = self.upright()
        image = image if method is None else image.transpose(method)
        shown = image if SHOW[orientation] is None else image.transpose(SHOW[orientation])
        self.assertIsNone(ImageChops.difference(shown, self.upright()).getbbox())
        exif = Image.Exif()
        exif[0x0112] = orientation
        return image, exif.tobytes()

    def test_all_orientations_jpeg(self):
        """For EXIF orientations 1-8 of a JPEG, the derived files are upright: the
        dimensions are those of the upright picture (so swapped against the stored
        pixels for 5-8) and the red and blue corners are top left and top right."""
        for orientation in range(1, 9):
            image, exif = self.stored(orientation)
            if orientation >= 5:
                self.assertEqual(image.size, self.UPRIGHT[::-1])
            path = self.save(image, f"o{orientation}.jpg", quality=92, exif=exif)
            derived = self.derive(path, stem=f"o{orientation}")
            self.check_upright(derived)

    def test_orientations_odd_size(self):
        """With odd dimensions (so the DCT-scaled decode ends in a partial pixel),
        every orientation still derives the upright size, the right corners, and
        nearly the same pixels as the unrotated original."""
        self.UPRIGHT = (4001, 1999)
        expected = [fit_size(self.UPRIGHT, box) for box in VARIANT_BOXES.values()]
        reference = None
        for orientation in (1, 2, 3, 6, 7, 8):
            image, exif = self.stored(orientation)
            path = self.save(image, f"odd{orientation}.jpg", quality=95, exif=exif)
            derived = self.derive(path, stem=f"odd{orientation}")
            self.assertSizes(derived, expected)
            with Image.open(derived[0].path) as xga:
                xga.load()
            self.assertColour(xga.getpixel((20, 20)), RED, 24)
            self.assertColour(xga.getpixel((xga.width - 20, 20)), BLUE, 24)
            if reference is None:
                reference = xga
            else:
                difference = ImageChops.difference(xga, reference).convert("L")
                mean = sum(i * n for i, n in enumerate(difference.histogram())) / (
                    xga.width * xga.height
                )
                self.assertTrue(mean < 1.5, (orientation, mean))

    def test_sizes_known_at_upload(self):
        """The upright size inspect_file records at upload, fitted by
        naming.variant_size, is each derived file's real size, for every orientation
        and for an odd size whose DCT-scaled decode ends in a partial pixel."""
        self.UPRIGHT = (2001, 999)
        for orientation in range(1, 9):
            image, exif = self.stored(orientation)
            path = self.save(image, f"known{orientation}.jpg", quality=90, exif=exif)
            info = sniff.inspect_file(path, 10**8)
            self.assertEqual((info.width, info.height), self.UPRIGHT, orientation)
            derived = self.derive(path, stem=f"known{orientation}")
            self.assertEqual(
                [(d.width, d.height) for d in derived],
                [naming.variant_size(info.width, info.height, v) for v in VARIANT_BOXES],
                orientation,
            )

    def test_unreadable_exif_ignored(self):
        """A JPEG whose EXIF block is garbage derives as stored, not as broken."""
        image = self.upright()
        path = self.save(image, "bad-exif.jpg", exif=b"Exif\x00\x00" + b"\xff" * 40)
        self.check_upright(self.derive(path))

    def test_orientation_png(self):
        """A PNG's eXIf orientation (6: stored rotated) is applied too."""
        image, exif = self.stored(6)
        path = self.save(image, "o6.png", exif=exif)
        self.check_upright(self.derive(path))

    def test_orientation_webp(self):
        """A WEBP's EXIF orientation (3: upside down) is applied too."""
        image, exif = self.stored(3)
        path = self.save(image, "o3.webp", exif=exif, quality=90)
        self.check_upright(self.derive(path))


class BrokenImageTests(DeriveTestCase):
    def assertBroken(self, path, max_pixels=LIMIT):
        error = self.assertRaises(BrokenImage, self.derive, path, max_pixels=max_pixels)
        self.assertTrue(str(error))
        self.assertEqual(os.listdir(self.out_dir), [])
        return error

    def test_truncated_jpeg(self):
        """A JPEG cut off halfway is broken (truncated images are never loaded)."""
        good = self.save(Image.effect_noise((800, 600), 40).convert("RGB"), "good.jpg")
        with open(good, "rb") as f:
            data = f.read()
        path = os.path.join(self.src_dir, "cut.jpg")
        with open(path, "wb") as f:
            f.write(data[: len(data) // 2])
        self.assertBroken(path)
        self.assertFalse(ImageFile.LOAD_TRUNCATED_IMAGES)

    def test_truncated_png(self):
        """A PNG cut off halfway is broken."""
        good = self.save(Image.effect_noise((400, 300), 40), "good.png")
        with open(good, "rb") as f:
            data = f.read()
        path = os.path.join(self.src_dir, "cut.png")
        with open(path, "wb") as f:
            f.write(data[: len(data) // 2])
        self.assertBroken(path)

    def test_garbage(self):
        """Bytes that are no image at all are broken."""
        path = os.path.join(self.src_dir, "junk.jpg")
        with open(path, "wb") as f:
            f.write(os.urandom(5000))
        self.assertBroken(path)

    def test_empty_file(self):
        """An empty file is broken."""
        path = os.path.join(self.src_dir, "empty.png")
        open(path, "wb").close()
        self.assertBroken(path)

    def test_gif_refused(self):
        """A GIF (a format Pillow reads but IMGSHARE does not accept) is broken."""
        self.assertBroken(self.save(Image.new("P", (30, 20)), "a.gif"))

    def test_tiff_refused(self):
        """A TIFF is broken too: only JPEG, PNG, BMP and WEBP are opened."""
        self.assertBroken(self.save(Image.new("RGB", (30, 20)), "a.tif"))

    def test_over_max_pixels_not_decoded(self):
        """An image with more pixels than max_pixels is broken, judged from its header:
        no pixel is decoded and Pillow's global MAX_IMAGE_PIXELS is left alone."""
        path = self.save(Image.new("RGB", (200, 100), RED), "a.jpg")
        before = Image.MAX_IMAGE_PIXELS
        loads = []
        real_load = ImageFile.ImageFile.load

        def load(image):
            loads.append(image)
            return real_load(image)

        self.patch(ImageFile.ImageFile, "load", load)
        error = self.assertBroken(path, max_pixels=200 * 100 - 1)
        self.assertIn("limit", str(error))
        self.assertEqual(loads, [])
        self.assertEqual(Image.MAX_IMAGE_PIXELS, before)
        self.derive(path, max_pixels=200 * 100)
        self.assertTrue(loads)

    def test_huge_header_without_pixels(self):
        """A PNG header claiming 100000x100000 pixels is refused before any decoding."""
        good = self.save(Image.new("RGB", (10, 10)), "a.png")
        with open(good, "rb") as f:
            data = bytearray(f.read())
        data[16:24] = struct.pack(">II", 100_000, 100_000)  # IHDR width, height
        path = os.path.join(self.src_dir, "huge.png")
        with open(path, "wb") as f:
            f.write(data)
        self.assertBroken(path)

    def test_missing_source_is_not_broken(self):
        """A source file that does not exist raises FileNotFoundError, not
        BrokenImage: the image is not to blame."""
        path = os.path.join(self.src_dir, "nope.jpg")
        self.assertRaises(FileNotFoundError, self.derive, path)


class FileWritingTests(DeriveTestCase):
    def test_no_temporary_files_left(self):
        """After a successful run the output directory holds exactly the four files."""
        path = self.save(Image.new("RGB", (2000, 1500), GREEN), "a.jpg")
        self.derive(path, stem="s")
        self.assertEqual(sorted(os.listdir(self.out_dir)), sorted(f"{v}-s.jpg" for v in VARIANTS))

    def test_failed_write_cleans_up(self):
        """When encoding fails midway, the error (an OSError, not BrokenImage)
        propagates, the temporary file is removed, and no partial file has a final name."""
        path = self.save(Image.new("RGB", (2000, 1500), GREEN), "a.jpg")
        real_save = Image.Image.save
        calls = []

        def save(image, fp, *args, **kwargs):
            calls.append(fp)
            if len(calls) == 2:
                fp.write(b"partial")
                raise OSError("disk full")
            return real_save(image, fp, *args, **kwargs)

        self.patch(Image.Image, "save", save)
        error = self.assertRaises(OSError, self.derive, path, stem="s")
        self.assertNotIsInstance(error, BrokenImage)
        self.assertEqual(os.listdir(self.out_dir), ["xga-s.jpg"])

    def test_threads_agree_with_sequential(self):
        """Deriving in several threads at once (as the image thread pool does)
        writes byte-for-byte the files a sequential run writes."""
        paths = [
            self.save(Image.effect_noise((1600, 1200), 50).convert("RGB"), f"{i}.jpg")
            for i in range(4)
        ]
        sequential = [self.derive(path, stem=f"seq{i}") for i, path in enumerate(paths)]
        with ThreadPoolExecutor(max_workers=2) as pool:
            parallel = list(
                pool.map(lambda ip: self.derive(ip[1], stem=f"par{ip[0]}"), enumerate(paths))
            )
        for seq, par in zip(sequential, parallel, strict=True):
            for a, b in zip(seq, par, strict=True):
                with open(a.path, "rb") as fa, open(b.path, "rb") as fb:
                    self.assertEqual(fa.read(), fb.read())

    def test_temporary_name_is_not_final(self):
        """While a file is being encoded it lives under a temporary name in the
        output directory, never under its final name (an image that needs all four
        encodes: every variant of another size)."""
        path = self.save(Image.new("RGB", (1200, 900), RED), "a.png")
        real_save = Image.Image.save
        seen = []

        def save(image, fp, *args, **kwargs):
            seen.append(sorted(os.listdir(self.out_dir)))
            return real_save(image, fp, *args, **kwargs)

        self.patch(Image.Image, "save", save)
        self.derive(path, stem="s")
        for index, (listing, variant) in enumerate(zip(seen, VARIANTS, strict=True)):
            done = [f"{v}-s.jpg" for v in VARIANTS[:index]]
            self.assertEqual(sorted(name for name in listing if name in done), sorted(done))
            temporary = [name for name in listing if name not in done]
            self.assertEqual(len(temporary), 1, listing)
            self.assertNotEqual(temporary[0], f"{variant}-s.jpg")
