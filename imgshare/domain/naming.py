"""Account names, image file names, storage keys and file references.

Every name IMGSHARE issues matches :data:`FILE_NAME_RE`; storage keys are
built only from such names (taken from database rows), never from request
paths.
"""

from __future__ import annotations

import datetime
import itertools
import math
import re
import secrets
from collections.abc import Callable, Iterator, Sequence
from urllib.parse import unquote, urlsplit

import attrs

from imgshare.domain import errors
from imgshare.domain.records import ImageType

_ACCOUNT_NAME_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")
#: Account names that would shadow a path of ours (SPEC section 3): the first segments
#: of the site's routes (``/i/`` the viewer pages, ``/delete/`` the secret delete links,
#: ``/sharexapi/`` Chevereto's ShareX path) and the derived-file folders.
RESERVED_NAMES = frozenset({
    "api", "img", "thumb", "static", "admin", "setup", "login", "logout", "register",
    "i", "delete", "sharexapi", "xga", "vga", "qvga",
})

FILE_NAME_RE = re.compile(r"^[0-9]{8}_[A-Za-z0-9._-]{1,60}\.(jpg|jpeg|png|bmp|webp)$")

RANDOM_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"
RANDOM_LENGTH = 8
MAX_BASE_LENGTH = 40

#: Extension of every derived file (xga, vga, qvga, thumb).
DERIVED_EXT = ".jpg"
#: Public resized versions, largest first.
VARIANTS = ("xga", "vga", "qvga")
#: The box each derived file must fit in, including the private thumbnail, in the
#: order derive.py makes them (a cascade: each from the one before).
VARIANT_BOXES: dict[str, tuple[int, int]] = {"xga": (1024, 768), "vga": (640, 480), "qvga": (320, 240), "thumb": (160, 160)}
THUMB = "thumb"


def fit_size(size: tuple[int, int], box: tuple[int, int]) -> tuple[int, int]:
    """The size ``size`` shrinks to so it fits in ``box``, keeping its aspect.

    Never larger than ``size`` (no upscaling), at least 1 px per side, and
    rounded like ``Image.thumbnail``: to whichever neighbouring integer keeps
    the aspect ratio closer.
    """
    width, height = size
    box_w, box_h = box
    if width <= box_w and height <= box_h:
        return width, height
    aspect = width / height
    if box_w / box_h >= aspect:  # height-bound
        exact = box_h * aspect
        new_w = min(math.floor(exact), math.ceil(exact), key=lambda n: abs(aspect - n / box_h))
        return max(new_w, 1), box_h
    exact = box_w / aspect
    new_h = min(
        math.floor(exact),
        math.ceil(exact),
        key=lambda n: 0 if n == 0 else abs(aspect - box_w / n),
    )
    return box_w, max(new_h, 1)


def variant_size(width: int, height: int, variant: str) -> tuple[int, int]:
    """The size of an original's derived file ``variant``, known before it is made
    (the original's upright size, as recorded at upload with its EXIF orientation
    applied, fitted in the variant's box, never upscaled)."""
    return fit_size((width, height), VARIANT_BOXES[variant])


_UNSAFE_CHARS = re.compile(r"[^A-Za-z0-9._-]")
_DOT_RUNS = re.compile(r"\.{2,}")
_ALNUM = re.compile(r"[A-Za-z0-9]")


def is_valid_account_name(name: str, *, allow_reserved: bool = False) -> bool:
    """True when ``name`` is a well-formed account name (the whole string: no trailing
    newline), not a reserved one unless ``allow_reserved``.

    New accounts and the paths the web layer parses refuse reserved names; looking
    up an account that may exist already (logins, served files) allows them, so an
    account made before its name was reserved is still found."""
    if _ACCOUNT_NAME_RE.fullmatch(name) is None:
        return False
    return allow_reserved or name not in RESERVED_NAMES


def is_valid_file_name(name: str) -> bool:
    """True when ``name`` has the shape of a name IMGSHARE issues.

    ``YYYYMMDD_<base>.<ext>`` with a safe base and an accepted extension;
    a ".." sequence is never part of such a name.
    """
    return FILE_NAME_RE.fullmatch(name) is not None and ".." not in name


def random_base(choice: Callable[[Sequence[str]], str] = secrets.choice) -> str:
    """Return a random base name: 8 characters of ``[a-z0-9]``."""
    return "".join(choice(RANDOM_ALPHABET) for _ in range(RANDOM_LENGTH))


def _last_component(filename: str) -> str:
    """The part of a client file name after its last ``/`` or ``\\``."""
    return re.split(r"[/\\]", filename)[-1]


def _split_extension(component: str) -> tuple[str, str]:
    """Split off the last extension; leading dots never start one."""
    body = component.lstrip(".")
    lead = component[: len(component) - len(body)]
    if "." not in body:
        return component, ""
    stem, ext = body.rsplit(".", 1)
    return lead + stem, "." + ext


def sanitize_base(filename: str) -> str | None:
    """Turn a client's file name into a safe base name, or None.

    Keeps the last path component without its extension, replaces every
    character outside ``[A-Za-z0-9._-]`` with ``_``, collapses runs of dots,
    strips leading and trailing dots and cuts the result to 40 characters.
    Returns None when no letter or digit remains.
    """
    base, _ = _split_extension(_last_component(filename))
    base = _UNSAFE_CHARS.sub("_", base)
    base = _DOT_RUNS.sub(".", base).lstrip(".")
    base = base[:MAX_BASE_LENGTH].rstrip(".")
    if not _ALNUM.search(base):
        return None
    return base


def choose_extension(client_filename: str | None, image_type: ImageType) -> str:
    """The extension of a stored original: always the detected type's.

    The one exception: a JPEG the client named ``*.jpeg`` keeps ``.jpeg``.
    """
    if client_filename and image_type.mime == "image/jpeg":
        _, ext = _split_extension(_last_component(client_filename))
        if ext.lower() == ".jpeg":
            return ".jpeg"
    return image_type.ext


#: Longest client file name kept (the embed codes' alt text, Chevereto's original_filename).
MAX_ORIGINAL_NAME_LENGTH = 255
_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def original_name(client_filename: str | None) -> str:
    """The client's own file name as kept with the image: its last path component,
    control characters and line breaks removed, whitespace trimmed, at most 255
    characters; "" when there is none.  It is shown only as escaped text."""
    if not client_filename:
        return ""
    kept = _CONTROL_CHARS.sub("", _last_component(client_filename)).strip()
    return kept[:MAX_ORIGINAL_NAME_LENGTH].strip()


def candidate_names(day: datetime.date, base: str, ext: str) -> Iterator[str]:
    """Yield ``YYYYMMDD_base.ext``, then ``YYYYMMDD_base_2.ext``, ``_3``, ... forever."""
    first = f"{day.strftime('%Y%m%d')}_{base}{ext}"
    yield first
    for number in itertools.count(2):
        yield suffixed_name(first, number)


def suffixed_name(name: str, number: int) -> str:
    """``name`` with the clash suffix ``_<number>`` before its extension:
    ``20260214_a.jpg`` and 3 give ``20260214_a_3.jpg``.  The base keeps its
    40 characters; the suffix comes after them."""
    stem = name_stem(name)
    return f"{stem}_{number}{name[len(stem):]}"


def name_stem(name: str) -> str:
    """The text of ``name`` before its last dot (the whole name without one)."""
    return name.rsplit(".", 1)[0]


def storage_key(account: str, name: str, variant: str | None = None) -> str:
    """Return the storage key of an original or one of its derived files.

    ``kitten/20260214_fountain.jpg`` for the original,
    ``kitten/xga/20260214_fountain.jpg`` for a variant and
    ``kitten/thumb/20260214_fountain.jpg`` for the thumbnail; derived files
    always use the original's stem with ``.jpg``. Raises ValueError for an
    invalid account, name or variant.
    """
    if not is_valid_account_name(account):
        raise ValueError(f"invalid account name: {account!r}")
    if not is_valid_file_name(name):
        raise ValueError(f"invalid file name: {name!r}")
    if variant is None:
        return f"{account}/{name}"
    if variant not in VARIANT_BOXES:
        raise ValueError(f"unknown variant: {variant!r}")
    return f"{account}/{variant}/{name_stem(name)}{DERIVED_EXT}"


@attrs.frozen
class FileRef:
    """A reference to one original image, parsed from a delete request.

    Exactly one of ``name`` (the original's exact name) and ``stem`` (the
    name without extension, known from a derived file's URL) is set.
    """

    account: str
    name: str | None = None
    stem: str | None = None

    def __attrs_post_init__(self) -> None:
        """Enforce that exactly one of name and stem is set."""
        if (self.name is None) == (self.stem is None):
            raise ValueError("exactly one of name and stem must be set")


def parse_file_reference(value: str, account: str) -> FileRef:
    """Parse the ``file`` parameter of ``img_delete``.

    Accepts a bare original name (owned by ``account``) or the URL, absolute
    or path-only, of any version of an image: ``/img/<acct>/<name>``,
    ``/img/<acct>/{xga,vga,qvga}/<stem>.jpg`` or ``/thumb/<acct>/<stem>.jpg``,
    possibly below a path prefix (a public URL with a path). Query strings
    and fragments are ignored; each path segment is percent-decoded once.
    Raises :class:`errors.BadRequest` for anything else.
    """
    value = value.strip()
    if "/" not in value:
        if is_valid_file_name(value):
            return FileRef(account=account, name=value)
        raise errors.BadRequest("file: not a file name or an image URL")
    ref = _parse_url_reference(value)
    if ref is None:
        raise errors.BadRequest("file: not a file name or an image URL")
    return ref


def _parse_url_reference(value: str) -> FileRef | None:
    """Parse an image URL into a FileRef, or None when it is not one."""
    try:
        parts = urlsplit(value)
        segments = [unquote(segment, errors="strict") for segment in parts.path.split("/")]
    except ValueError:  # includes UnicodeDecodeError from a bad %-escape
        return None
    if parts.scheme not in ("", "http", "https"):
        return None
    return _original_ref(segments) or _derived_ref(segments)


def _original_ref(segments: list[str]) -> FileRef | None:
    """``.../img/<acct>/<name>``: a reference to the original by name."""
    if len(segments) < 3 or segments[-3] != "img":
        return None
    account, name = segments[-2], segments[-1]
    if is_valid_account_name(account) and is_valid_file_name(name):
        return FileRef(account=account, name=name)
    return None


def _derived_ref(segments: list[str]) -> FileRef | None:
    """``.../img/<acct>/<variant>/<stem>.jpg`` or ``.../thumb/<acct>/<stem>.jpg``."""
    if len(segments) >= 4 and segments[-4] == "img" and segments[-2] in VARIANTS:
        account = segments[-3]
    elif len(segments) >= 3 and segments[-3] == THUMB:
        account = segments[-2]
    else:
        return None
    derived = segments[-1]
    if not is_valid_account_name(account) or not derived.endswith(DERIVED_EXT):
        return None
    if not is_valid_file_name(derived):
        return None
    return FileRef(account=account, stem=name_stem(derived))
