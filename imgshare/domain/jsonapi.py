"""The bodies of the Bearer / X-API-Key JSON API (PEERS section 2: imgtree and
ImgLink's families at once): the image object, the upload, list and get answers,
and errors.  Pure functions over image records and the public URL."""

from __future__ import annotations

import html
from typing import Any

from imgshare.domain import embed, errors, ids, output, records

OK: dict[str, Any] = {"success": True, "status": "ok"}


def image_object(image: records.Image, public_url: str) -> dict[str, Any]:
    """One image as both families read it: ``url`` is the file (ImgLink), ``viewer`` the
    page; ``delete_url`` and ``delete`` only on the record an upload returns."""
    urls = output.image_urls(public_url, image.account, image.name)
    original, qvga = urls["original"], urls["qvga"]
    viewer = output.viewer_url(public_url, image.account, image.name)
    public_id = ids.public_id(image.account, image.name)
    alt = embed.alt_text(image)
    obj: dict[str, Any] = {
        "id": public_id,
        "slug": public_id,
        "file": image.name,
        "user": image.account,
        "url": original,
        "direct_url": original,
        "viewer": viewer,
        "thumb_url": qvga,
        "thumbnail": qvga,
    }
    if image.delete_secret:
        link = output.delete_url(public_url, image.account, image.name, image.delete_secret)
        obj["delete_url"] = obj["delete"] = link
    obj.update({
        "width": image.width,
        "height": image.height,
        "size": image.size,
        "mime": image.mime,
        "sha256": image.sha256,
        "has_location": image.has_location,
        "original_name": image.original_name,
        "created_at": output.iso_time(image.uploaded),
        "expires": None if image.expires is None else output.iso_time(image.expires),
        "urls": urls,
        "codes": {
            "bbcode": f"[img]{original}[/img]",
            "bbcode_thumb": f"[url={viewer}][img]{qvga}[/img][/url]",
            "html": f'<a href="{viewer}"><img src="{urls["xga"]}" alt="{html.escape(alt, quote=True)}"></a>',
            "markdown": f"![{embed.markdown_text(alt)}]({original})",
            "direct": original,
        },
    })
    return obj


def file_error(message: str, filename: str) -> dict[str, Any]:
    """A batch entry for a file that was not stored."""
    return {"error": message, "filename": filename}


def upload_body(entries: list[dict[str, Any]]) -> dict[str, Any]:
    """The answer to an upload with at least one stored file: ``entries`` in request
    order (image objects and ``file_error`` entries); with exactly one file, its
    object is also at the top level."""
    body: dict[str, Any] = dict(OK)
    if len(entries) == 1 and "error" not in entries[0]:
        body.update(entries[0])
    body["images"] = entries
    return body


def failed_upload_body(entries: list[dict[str, Any]]) -> dict[str, Any]:
    """The answer when no file of a batch was stored: the first reason, and every entry."""
    return {**error_body(entries[0]["error"]), "images": entries}


#: The page size of a listing when none is asked for, and the largest (more is clamped).
DEFAULT_LIMIT = 24
MAX_LIMIT = 100


def paging(page: str | None, limit: str | None) -> tuple[int, int]:
    """``(page, limit)`` of a listing from the query's text values (None: absent).

    ``page`` counts from 1; ``limit`` is clamped to ``MAX_LIMIT`` rather than refused,
    as imgtree documents it; anything not a whole number of at least 1 is a
    BadRequest (a page past the end is not an error: it is empty)."""
    return _whole_number("page", page, 1), min(_whole_number("limit", limit, DEFAULT_LIMIT), MAX_LIMIT)


def _whole_number(name: str, value: str | None, default: int) -> int:
    """ASCII digits only: ``int()`` would also take ``" 2"``, ``"+2"``, ``"2_0"`` and
    other scripts' digits, which no client means."""
    if value is None:
        return default
    try:
        number = int(value) if value.isascii() and value.isdigit() else 0
    except ValueError:  # more digits than Python converts
        number = 0
    if number < 1:
        raise errors.BadRequest(f"{name}: a whole number of at least 1")
    return number


def list_body(images: list[dict[str, Any]], page: int, limit: int, total: int,
              capped: bool = False) -> dict[str, Any]:
    """One page of the caller's images (``images`` are image objects of records read
    back, so without delete links: only the secret's hash is kept).  ``capped``: more
    images match a search than it counts, ``total``; ``total_capped`` then says so."""
    body = {**OK, "images": images, "page": page, "limit": limit, "total": total,
            "has_more": page * limit < total}
    if capped:
        body["total_capped"] = True
    return body


def get_body(image: records.Image, public_url: str) -> dict[str, Any]:
    """The answer to ``GET /api/v1/image/<id>``: the object under ``data``."""
    obj = image_object(image, public_url)
    obj["uploadedAt"] = obj["created_at"]
    return {**OK, "data": obj}


def deleted_body(image: records.Image) -> dict[str, Any]:
    return {**OK, "deleted": image.name, "id": ids.public_id(image.account, image.name)}


def error_body(message: str) -> dict[str, Any]:
    """The body of every error of this family."""
    return {"success": False, "status": "error", "error": message}
