"""The bodies of the Bearer / X-API-Key JSON API (PEERS section 2: imgtree and
ImgLink's families at once): the image object, the upload, list and get answers,
and errors.  Pure functions over image records and the public URL."""

from __future__ import annotations

import html
from typing import Any

from imgshare.domain import cursors, embed, errors, ids, output, records

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


def list_body(images: list[dict[str, Any]], page: int | None, limit: int, total: int,
              capped: bool = False, *, next: str | None = None, previous: str | None = None,
              has_more: bool | None = None) -> dict[str, Any]:
    """One page of the caller's images (``images`` are image objects of records read
    back, so without delete links: only the secret's hash is kept).  ``capped``: more
    images match a search than it counts, ``total``; ``total_capped`` then says so.
    ``next`` and ``previous``: the cursors of the pages after and before this one
    (None when nothing is known to be there); ``page`` is None for a page read at a
    cursor, whose ``has_more`` is given (a page by number computes it)."""
    body = {**OK, "images": images, "page": page, "limit": limit, "total": total,
            "has_more": bool(has_more) if page is None else page * limit < total,
            "next": next, "previous": previous}
    if capped:
        body["total_capped"] = True
    return body


def page_cursors(found: list[records.Image], sort: str, after: bool, before: bool,
                 at: str | None = None) -> tuple[str | None, str | None]:
    """``(next, previous)``: the cursor after the last image of a page (when ``after``:
    more follow) and before its first (when ``before``).  A page that is empty gives
    ``at`` (the cursor it was read at, if any) both ways."""
    if not found:
        return (at if after else None), (at if before else None)
    last = cursors.encode(cursors.position_of(sort, found[-1])) if after else None
    first = cursors.encode(cursors.position_of(sort, found[0])) if before else None
    return last, first


def cursor_choice(page: str | None, after: str | None, before: str | None) -> tuple[str, bool] | None:
    """The cursor a listing is read at, ``(cursor, before)``, from the query's text
    values, or None for a page by number; BadRequest for both ``after`` and
    ``before``, or a cursor with ``page`` (a position and a page number are two
    different ways to say where)."""
    if after is None and before is None:
        return None
    if after is not None and before is not None:
        raise errors.BadRequest("after and before: one cursor at a time")
    if page is not None:
        raise errors.BadRequest("page and a cursor (after or before): one or the other")
    return (after, False) if after is not None else (before or "", True)


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
