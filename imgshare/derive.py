"""Derived files (SPEC section 6): XGA, VGA, QVGA and thumbnail JPEGs.

Pure functions, run in the image thread pool by the job service; nothing here
imports Twisted.  :func:`derive_variants` decodes an original once (JPEGs at
the smallest DCT scale that still covers the XGA box), stands it upright from
its EXIF orientation, brings it to sRGB RGB (ICC profile honoured, alpha
flattened onto white) and resizes in a cascade XGA -> VGA -> QVGA -> thumb,
each step from the one before, writing one progressive quality-85 JPEG per
step, in that order (a step that leaves the size as it was, as for an original
smaller than the XGA and VGA boxes, repeats the file before instead of encoding
the same image again).

Pillow releases the GIL while decoding, resampling and encoding into a real
file, so two threads deriving two images run in parallel, and one derivation
can lend work to a helper thread: the bottom half of the first resize, then
the whole cascade of smaller sizes while the calling thread encodes the XGA.
For a 12-megapixel JPEG the time then goes to the decode (about half), the
XGA resize (split in two) and the four progressive encodes, one after another
(bench/derive.py; docs/architecture.md has the figures).
"""

from __future__ import annotations

import io
import os
import shutil
import struct
import tempfile
import threading
from collections.abc import Callable
from concurrent import futures
from typing import BinaryIO

import attrs
from PIL import ExifTags, Image, ImageCms
from PIL.JpegImagePlugin import JpegImageFile

from imgshare.domain import sniff
from imgshare.domain.naming import VARIANT_BOXES, fit_size
from imgshare.spool import remove_if_present

__all__ = [
    "BrokenImage",
    "Derived",
    "derive_variants",
    "fit_size",
]

#: The only formats the decoder may pick (SPEC section 4).
FORMATS = ("JPEG", "PNG", "BMP", "WEBP")

#: Resampling filters, chosen by measurement (bench/derive.py).  The first
#: step (decoded image -> XGA) is the costly one: it reads the most pixels, and
#: after a DCT-scaled JPEG decode (which has already reduced the image to less
#: than twice the target) an area average (BOX: each output pixel the mean of
#: the input pixels it covers) is enough there: it takes 40% of BICUBIC's time,
#: and on a photo BICUBIC gains 0.1 dB of PSNR against a LANCZOS reference
#: (bench/derive.py).  Without a DCT-scaled decode (PNG, WEBP, BMP, small
#: JPEGs) the first step uses BICUBIC as well: BOX at a ratio between 1 and 2
#: turns fine regular patterns (stripes, dithering) into moire.  The cascade
#: steps are cheap and their errors add up, so they use BICUBIC (as sharp as
#: LANCZOS at a 2x reduction, in 3/4 of its time).
RESAMPLE_FIRST = Image.Resampling.BOX
RESAMPLE = Image.Resampling.BICUBIC
#: ``Image.resize`` first box-reduces by an integer factor when the ratio is at
#: least twice this (large PNGs, WEBPs, BMPs), then resamples the rest.
REDUCING_GAP = 2.0

#: Encoder options.  libjpeg forces optimised Huffman tables for progressive
#: output anyway, so ``optimize`` would only add a pass; subsampling stays the
#: library default (4:2:0).
JPEG_OPTIONS = {"quality": 85, "progressive": True, "optimize": False}

#: The first resize is split between two threads only for these modes (with
#: alpha, Pillow premultiplies the whole image before resizing, which each half
#: would then do again) and only when each half has this many rows.
_SPLIT_MODES = frozenset({"RGB", "L", "CMYK"})
SPLIT_MIN_ROWS = 64

_HELPERS: futures.ThreadPoolExecutor | None = None
_HELPERS_LOCK = threading.Lock()

_WHITE = (255, 255, 255)
_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_SWAPS_AXES = frozenset({5, 6, 7, 8})
# ICC colour space of a profile -> the image mode it can be applied to.
_ICC_MODE = {"RGB": "RGB", "GRAY": "L", "CMYK": "CMYK"}
# Errors Pillow raises for undecodable input.  UnidentifiedImageError is an
# OSError; DecompressionBombWarning only matters if warnings are errors.
_DECODE_ERRORS = (
    OSError,
    SyntaxError,
    ValueError,
    TypeError,
    IndexError,
    KeyError,
    EOFError,
    struct.error,
    Image.DecompressionBombError,
    Image.DecompressionBombWarning,
)


class BrokenImage(Exception):
    """The image library cannot decode the image; the message says why."""


@attrs.frozen
class Derived:
    """One derived file written by :func:`derive_variants`."""

    variant: str
    path: str
    width: int
    height: int
    size: int


def derive_variants(
    src_path: str, out_dir: str, stem: str, max_pixels: int, *, helper: bool = True
) -> list[Derived]:
    """Write ``out_dir/<variant>-<stem>.jpg`` for every variant of ``src_path``.

    Returns one :class:`Derived` per variant, in cascade order (XGA, VGA,
    QVGA, thumb).  Raises :class:`BrokenImage` when the image cannot be decoded
    (not one of JPEG/PNG/BMP/WEBP, truncated, corrupt, or more than
    ``max_pixels`` pixels, which is checked from the header before decoding).
    Failing to open ``src_path`` at all, or to write into ``out_dir``, raises
    the ``OSError`` itself: that is not the image's fault.

    Each file is written under a temporary name in ``out_dir`` and renamed
    into place, in cascade order, so a final name never holds a partial file.
    If writing fails midway, the variants already renamed into place stay.
    ``stem`` must be a plain file name part (ValueError otherwise).

    With ``helper`` (the default) a second thread takes half of the first
    resize and then the cascade of smaller sizes while this thread encodes
    (Pillow releases the GIL for both), which takes about a quarter off the
    time one image takes; without it everything runs in the calling thread.
    The result is the same either way (to the bit where the split of the first
    resize falls on an exact row of the source, as for 4000x3000 -> 1024x768;
    elsewhere float rounding moves some pixels by one level).
    """
    if not stem or "/" in stem or os.sep in stem or stem in (".", ".."):
        raise ValueError(f"not a plain file name stem: {stem!r}")
    with open(src_path, "rb") as fp:
        image, upright, box, icc = _decode(fp, src_path, max_pixels)

    pool = _helper_pool() if helper else None
    targets = [
        (variant, fit_size(upright, variant_box)) for variant, variant_box in VARIANT_BOXES.items()
    ]
    try:
        first = _resize_first(image, targets[0][1], box, pool)
        first = _to_srgb(first, icc)
    except _DECODE_ERRORS as exc:
        raise BrokenImage(f"{src_path}: cannot convert image: {exc}") from exc
    del image

    sizes = [target for _, target in targets[1:]]
    smaller = pool.submit(_cascade, first, sizes) if pool is not None else None
    results: list[Derived] = []
    try:
        written = [first]
        for index, (variant, _) in enumerate(targets):
            if index == 1:  # the XGA is written; the smaller ones are needed now
                written += smaller.result() if smaller is not None else _cascade(first, sizes)
            current = written[index]
            name = f"{variant}-{stem}.jpg"
            if index and current is written[index - 1]:  # fits both boxes: the same file again
                path, size = _copy_file(results[-1].path, out_dir, name), results[-1].size
            else:
                path, size = _write_jpeg(current, out_dir, name)
            results.append(Derived(variant, path, current.width, current.height, size))
    finally:
        if smaller is not None:
            futures.wait([smaller])  # never leave the helper working on our images
    return results


def _helper_pool() -> futures.ThreadPoolExecutor:
    """The threads that help derivations along: one per CPU this process may
    run on, made on first use (so after any fork), shared by every derivation
    of the process."""
    global _HELPERS
    with _HELPERS_LOCK:
        if _HELPERS is None:
            cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
            _HELPERS = futures.ThreadPoolExecutor(
                max_workers=cpus or os.cpu_count() or 1, thread_name_prefix="imgshare-derive"
            )
        return _HELPERS


def _cascade(first: Image.Image, sizes: list[tuple[int, int]]) -> list[Image.Image]:
    """Each size resized from the one before, starting from ``first``."""
    made = []
    previous = first
    for size in sizes:
        previous = _resize(previous, size, None, RESAMPLE)
        made.append(previous)
    return made


def _resize_first(
    image: Image.Image,
    size: tuple[int, int],
    box: tuple[float, float, float, float] | None,
    pool: futures.ThreadPoolExecutor | None,
) -> Image.Image:
    """The decoded image resized to the first (largest) size (BOX after a
    DCT-scaled decode, BICUBIC otherwise); with a helper pool, the bottom half
    is resized in another thread while this one does the top half.  Pillow
    computes each output row from the source rows around it wherever the box
    ends, so the halves meet without a seam; each half's scale is the whole's
    up to float rounding, which can move a pixel by one level.
    """
    width, height = size
    resample = RESAMPLE_FIRST if box is not None else RESAMPLE
    if pool is None or image.mode not in _SPLIT_MODES or height < 2 * SPLIT_MIN_ROWS:
        return _resize(image, size, box, resample)
    if image.size == size and box is None:
        return image
    x0, y0, x1, y1 = box if box is not None else (0.0, 0.0, *image.size)
    rows = height // 2
    middle = y0 + (y1 - y0) * rows / height
    bottom = pool.submit(
        image.resize,
        (width, height - rows),
        resample,
        box=(x0, middle, x1, y1),
        reducing_gap=REDUCING_GAP,
    )
    try:
        top = image.resize(
            (width, rows), resample, box=(x0, y0, x1, middle), reducing_gap=REDUCING_GAP
        )
    finally:
        futures.wait([bottom])
    whole = Image.new(image.mode, size)
    whole.paste(top, (0, 0))
    whole.paste(bottom.result(), (0, rows))
    return whole


def _decode(
    fp: io.BufferedReader, name: str, max_pixels: int
) -> tuple[Image.Image, tuple[int, int], tuple[float, float, float, float] | None, bytes | None]:
    """Decode once; return (upright working image, upright full-size
    dimensions, the box of the image that maps onto them, the ICC profile).
    """
    try:
        image = Image.open(fp, formats=FORMATS)
    except _DECODE_ERRORS as exc:
        raise BrokenImage(f"{name}: not a readable JPEG, PNG, BMP or WEBP image: {exc}") from exc
    width, height = image.size
    if width < 1 or height < 1:
        raise BrokenImage(f"{name}: image has no pixels ({width}x{height})")
    if width * height > max_pixels or max(width, height) > sniff.MAX_SIDE:
        raise BrokenImage(
            f"{name}: {width}x{height} is over the limits of {max_pixels} pixels "
            f"and {sniff.MAX_SIDE} pixels a side"
        )
    if isinstance(image, JpegImageFile) and sniff.count_jpeg_scans(name) > sniff.MAX_JPEG_SCANS:
        # Decoding cost must stay bounded by the pixel count (a "scan bomb"),
        # also for files stored before uploads were checked for it.
        raise BrokenImage(f"{name}: the JPEG has more than {sniff.MAX_JPEG_SCANS} scans")
    icc = image.info.get("icc_profile") or None

    box = None
    if isinstance(image, JpegImageFile):  # also MPO, which the JPEG opener returns
        # DCT scaling: decode at 1/2, 1/4 or 1/8 while the result still
        # covers the XGA target in both directions, judged upright.
        swapped = _orientation(image) in _SWAPS_AXES
        shown = (height, width) if swapped else (width, height)
        want_w, want_h = fit_size(shown, VARIANT_BOXES["xga"])
        if swapped:
            want_w, want_h = want_h, want_w
        drafted = image.draft("RGB", (want_w, want_h))
        if drafted is not None and image.size != (width, height):
            box = drafted[1]

    try:
        image.load()
    except _DECODE_ERRORS as exc:
        raise BrokenImage(f"{name}: cannot decode image: {exc}") from exc

    # Stand the picture upright: the transposition ImageOps.exif_transpose
    # applies, from the orientation it reads (EXIF, or XMP), done here so it
    # cannot half-fail while rewriting EXIF data the derived files never carry.
    orientation = _orientation(image)
    if orientation in _SWAPS_AXES:
        upright = (height, width)
    else:
        upright = (width, height)
    if orientation != 1:
        if box is not None:
            box = _transpose_box(box, image.size, orientation)
        try:
            image = image.transpose(_TRANSPOSE[orientation])
        except _DECODE_ERRORS as exc:
            raise BrokenImage(f"{name}: cannot orient image: {exc}") from exc

    try:
        working = _working_mode(image)
    except _DECODE_ERRORS as exc:
        raise BrokenImage(f"{name}: cannot convert mode {image.mode}: {exc}") from exc
    return working, upright, box, icc


def _orientation(image: Image.Image) -> int:
    """The EXIF orientation (1-8), read as ImageOps.exif_transpose reads it;
    1 when absent, unreadable or out of range."""
    try:
        value = image.getexif().get(ExifTags.Base.Orientation, 1)
    except _DECODE_ERRORS:
        return 1
    return value if value in _TRANSPOSE else 1


def _transpose_box(
    box: tuple[float, float, float, float], size: tuple[int, int], orientation: int
) -> tuple[float, float, float, float]:
    """Where the region ``box`` of an image of ``size`` lies after the EXIF
    transposition for ``orientation``.

    A DCT-scaled decode rounds its size up, so its last row and column may
    stand for only part of a pixel; ``box`` says exactly which area of the
    decoded pixels is the whole picture, and resizing from it keeps the
    geometry exact.
    """
    w, h = size
    method = _TRANSPOSE.get(orientation)
    maps = {
        None: lambda x, y: (x, y),
        Image.Transpose.FLIP_LEFT_RIGHT: lambda x, y: (w - x, y),
        Image.Transpose.ROTATE_180: lambda x, y: (w - x, h - y),
        Image.Transpose.FLIP_TOP_BOTTOM: lambda x, y: (x, h - y),
        Image.Transpose.TRANSPOSE: lambda x, y: (y, x),
        Image.Transpose.ROTATE_270: lambda x, y: (h - y, x),
        Image.Transpose.TRANSVERSE: lambda x, y: (h - y, w - x),
        Image.Transpose.ROTATE_90: lambda x, y: (y, w - x),
    }
    x0, y0 = maps[method](box[0], box[1])
    x1, y1 = maps[method](box[2], box[3])
    return (min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))


def _working_mode(image: Image.Image) -> Image.Image:
    """Bring any decoded mode to one the resampler and the colour step take:
    RGB, L, CMYK (kept so the ICC profile still applies), RGBA or LA (alpha
    flattened after the first resize, on fewer pixels).
    """
    mode = image.mode
    if mode in ("RGB", "L", "CMYK", "RGBA", "LA"):
        return image
    if mode == "1":
        return image.convert("L")
    if mode == "P":
        return image.convert("RGBA" if image.has_transparency_data else "RGB")
    if mode == "PA":
        return image.convert("RGBA")
    if mode.startswith("I;16") or mode == "I":
        # 16-bit grey (what a 16-bit PNG decodes to): 0..65535 -> 0..255,
        # rounded.  Plain "I" is taken to hold the same 16-bit range;
        # convert("L") alone would clip everything above 255 to white.
        return image.convert("I").point(lambda v: v * (1 / 257) + 0.5).convert("L")
    if mode == "F":
        return image.convert("L")  # 0.0..255.0, clipped
    if mode == "La":
        return image.convert("LA")
    if mode == "RGBa":
        return image.convert("RGBA")
    return image.convert("RGB")  # RGBX, YCbCr, LAB, HSV, ...


def _resize(
    image: Image.Image,
    size: tuple[int, int],
    box: tuple[float, float, float, float] | None,
    resample: Image.Resampling,
) -> Image.Image:
    if image.size == size and box is None:
        return image
    return image.resize(size, resample, box=box, reducing_gap=REDUCING_GAP)


def _to_srgb(image: Image.Image, icc: bytes | None) -> Image.Image:
    """RGB in sRGB: alpha flattened onto white, then the ICC profile applied."""
    if image.mode in ("RGBA", "LA"):
        flat_mode = image.mode[:-1]
        background = Image.new(flat_mode, image.size, _WHITE if flat_mode == "RGB" else 255)
        background.paste(image.convert(flat_mode), mask=image.getchannel("A"))
        image = background
    if icc is not None:
        image = _apply_icc(image, icc)
    if image.mode != "RGB":
        image = image.convert("RGB")
    return image


def _apply_icc(image: Image.Image, icc: bytes) -> Image.Image:
    """Convert from the embedded profile to sRGB; a profile that is broken or
    does not fit the image's mode is ignored (the pixels are taken as sRGB).
    """
    try:
        source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        if _ICC_MODE.get(source.profile.xcolor_space.strip()) != image.mode:
            return image
        converted = ImageCms.profileToProfile(
            image, source, ImageCms.createProfile("sRGB"), outputMode="RGB"
        )
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError, AttributeError):
        return image
    return converted if converted is not None else image


def _copy_file(path: str, out_dir: str, name: str) -> str:
    """``path`` under ``name`` in ``out_dir`` too: a variant whose size is the one before's
    (an original smaller than both boxes) is that very JPEG, encoded once (libjpeg would
    give the same bytes again).  A hard link where the folder allows it, else a copy."""
    final = os.path.join(out_dir, name)
    try:
        os.link(path, final)
    except OSError:
        def copy(fh: BinaryIO) -> None:
            with open(path, "rb") as src:
                shutil.copyfileobj(src, fh)

        _into_place(out_dir, name, copy)
    return final


def _write_jpeg(image: Image.Image, out_dir: str, name: str) -> tuple[str, int]:
    """Encode into ``out_dir/name`` (through a temporary name, ``_into_place``).

    Saving into a real file (not BytesIO) lets Pillow encode without the GIL.
    """
    return _into_place(out_dir, name, lambda fh: image.save(fh, "JPEG", **JPEG_OPTIONS))


def _into_place(out_dir: str, name: str, fill: Callable[[BinaryIO], object]) -> tuple[str, int]:
    """``fill`` a temporary file in ``out_dir``, then rename it to ``name``, so a final
    name never holds a partial file; the path and the size written."""
    final = os.path.join(out_dir, name)
    fd, temp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=out_dir)
    try:
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), 0o644)
            fill(fh)
            size = fh.tell()
        os.replace(temp, final)
    except BaseException:
        remove_if_present(temp)
        raise
    return final, size
