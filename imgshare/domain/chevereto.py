"""The Chevereto API v1/v1.1 answers (PEERS section 1): the image object, the
ImgBB flavour, errors and their codes.  Pure: the route in
``imgshare.web.chevereto`` sends them."""

from __future__ import annotations

import datetime
import math
from http import HTTPStatus
from typing import Any
from urllib.parse import urlsplit

from imgshare.domain import errors, ids, naming, output, records
from imgshare.domain.base64text import BadBase64

#: Error codes beside the HTTP status (PEERS section 1).
CODE_KEY = 100  # key missing, unknown or expired (401)
CODE_BASE64 = 120  # bad base64 (400)
CODE_NO_SOURCE = 130  # empty source, or base64 on GET (400)
CODE_BAD_INPUT = 400  # any other bad input

#: The answer formats; ``text`` is an alias of ``txt``.
FORMATS = ("json", "txt", "redirect")


class NoSource(errors.BadRequest):
    """No image came (400; code 130)."""


def pick_format(value: str | None) -> str:
    """``json`` (default, and for anything unknown), ``txt`` (also ``text``) or ``redirect``."""
    value = (value or "").strip().lower()
    value = {"text": "txt"}.get(value, value)
    return value if value in FORMATS else "json"


def error_code(error: errors.ApiError) -> int:
    """The Chevereto code answering ``error``."""
    if isinstance(error, NoSource):
        return CODE_NO_SOURCE
    if isinstance(error, BadBase64):
        return CODE_BASE64
    if error.status == 401:
        return CODE_KEY
    return CODE_BAD_INPUT if error.status == 400 else error.status


def status_text(status: int) -> str:
    """``OK``, ``Unauthorized``, ... (the HTTP reason phrase)."""
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def error_body(status: int, message: str, code: int) -> dict[str, Any]:
    """``{"status_code": 401, "error": {"message": ..., "code": 100}, "status_txt": "Unauthorized"}``."""
    return {"status_code": status, "error": {"message": message, "code": code}, "status_txt": status_text(status)}


def gmt(ts: float) -> str:
    """Chevereto's date form, in UTC: ``2026-02-14 09:30:00``."""
    return datetime.datetime.fromtimestamp(math.floor(ts), tz=datetime.UTC).strftime("%Y-%m-%d %H:%M:%S")


def size_formatted(size: int) -> str:
    """``532 B``, ``12.4 KB``, ``1.2 MB`` (binary multiples, as Chevereto counts)."""
    if size < 1024:
        return f"{size} B"
    value = float(size)
    for unit in ("KB", "MB", "GB"):
        value /= 1024
        if value < 1024 or unit == "GB":
            break
    return f"{value:.1f} {unit}"


def _file(name: str, mime: str, url: str) -> dict[str, Any]:
    stem, _, ext = name.rpartition(".")
    return {"filename": name, "name": stem, "mime": mime, "extension": ext, "url": url}


def image_object(image: records.Image, public_url: str, original_filename: str = "") -> dict[str, Any]:
    """The ``image`` object of a Chevereto upload answer, with real values: the derived
    files' sizes are computed from the original's upright size (the size recorded at
upload, EXIF orientation applied), so they are known before they exist and match
the copies derive.py makes."""
    urls = output.image_urls(public_url, image.account, image.name)
    viewer = output.viewer_url(public_url, image.account, image.name)
    stem, _, ext = image.name.rpartition(".")
    derived = f"{stem}{naming.DERIVED_EXT}"
    vga_w, vga_h = naming.variant_size(image.width, image.height, "vga")
    qvga_w, qvga_h = naming.variant_size(image.width, image.height, "qvga")
    obj: dict[str, Any] = {
        "id_encoded": ids.public_id(image.account, image.name),
        "name": stem,
        "extension": ext,
        "filename": image.name,
        "original_filename": image.original_name or original_filename or image.name,
        "title": stem,
        "mime": image.mime,
        "size": image.size,
        "size_formatted": size_formatted(image.size),
        "width": image.width,
        "height": image.height,
        "ratio": image.width / image.height,
        "date": gmt(image.uploaded),
        "date_gmt": gmt(image.uploaded),
        "expiration_date_gmt": None if image.expires is None else gmt(image.expires),
        "type": "image",
        "nsfw": 0,
        "views": 0,
        "sha256": image.sha256,
        "url": urls["original"],
        "url_viewer": viewer,
        "url_short": viewer,
        "path_viewer": urlsplit(viewer).path,
        "display_url": urls["vga"],
        "display_width": vga_w,
        "display_height": vga_h,
        "image": {**_file(image.name, image.mime, urls["original"]), "size": image.size},
        "thumb": {**_file(derived, "image/jpeg", urls["qvga"]), "width": qvga_w, "height": qvga_h},
        "medium": {**_file(derived, "image/jpeg", urls["vga"]), "width": vga_w, "height": vga_h},
    }
    if image.delete_secret:
        obj["delete_url"] = output.delete_url(public_url, image.account, image.name, image.delete_secret)
    obj["urls"] = urls
    return obj


def success_body(image: records.Image, public_url: str, original_filename: str = "", imgbb: bool = False) -> dict[str, Any]:
    """The JSON answer to an upload: Chevereto's, or the ImgBB flavour (the source came as
    ``image``): the same object under ``data`` with ``id``, ``time`` and ``expiration``."""
    obj = image_object(image, public_url, original_filename)
    if not imgbb:
        return {"status_code": 200, "success": {"message": "image uploaded", "code": 200},
                "image": obj, "status_txt": "OK"}
    lifetime = 0 if image.lifetime is None else max(round(image.lifetime), 0)
    data = {"id": obj["id_encoded"], **obj, "time": str(math.floor(image.uploaded)), "expiration": str(lifetime)}
    return {"data": data, "success": True, "status": 200, "status_code": 200}
