"""The gallery, the upload form and image deletion (SPEC section 9), under
``/images``.  Uploads go through ``ImageLibrary.upload`` exactly as the API's do."""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from typing import Any, ClassVar
from urllib.parse import urlencode

import attrs
from klein import Klein
from twisted.python.failure import Failure

from imgshare.domain import cursors, embed, errors, lifetime, output, words
from imgshare.domain.records import Image
from imgshare.library import MAX_SELECTED, SORTS, search_text, selected_names
from imgshare.web.http import query
from imgshare.web.pages.base import NOTICES, PageArea, json_response, redirect, sentence, wants_json
from imgshare.web.views import (
    Choice,
    ConfirmBody,
    GalleryQuery,
    ImagesBody,
    ImageView,
    UploadedBody,
    UploadResult,
)

#: Images per page of the gallery.
PAGE_SIZE = 24
#: Files one upload form may carry (the body limit applies to them together).
MAX_FORM_FILES = 50

#: The form's lifetime choices ("Forever" follows them).
UPLOAD_LIFETIMES = (
    ("", "Longest allowed for its size"), ("1h", "1 hour"), ("1d", "1 day"), ("7d", "7 days"),
    ("30d", "30 days"), ("90d", "90 days"), ("365d", "1 year"),
)
VERSION_LABELS = (("original", "Original"), ("xga", "XGA"), ("vga", "VGA"), ("qvga", "QVGA"))
#: The codes a gallery card offers to copy (its viewer page has all of them).
SHARED_CODES = ("direct", "bbcode", "markdown")


@functools.cache
def upload_lifetimes(tiers: Sequence[lifetime.Tier]) -> tuple[Choice, ...]:
    """The form's lifetime choices under ``tiers``, each saying which sizes may have it
    (a choice no size may have is left out); made once per set of tiers."""
    choices = []
    for value, label in (*UPLOAD_LIFETIMES, ("never", "Forever")):
        granted = [lifetime.decide(t.max_size, value, tiers).change is None for t in tiers]
        if not any(granted):
            continue
        if not all(granted):
            prefix = granted.index(False)
            if any(granted[prefix:]):
                label += " (for some sizes)"
            else:
                label += f" (files up to {words.size_in_words(tiers[prefix - 1].max_size)})"
        choices.append(Choice(value, label))
    return tuple(choices)


@functools.cache
def lifetime_table(tiers: Sequence[lifetime.Tier]) -> str:
    """For the script of the form: what each choice gives each size, as the server
    decides it (``sizes``: the tiers' largest sizes; ``choices``: per choice, per tier,
    the lifetime in words and why it differs from the choice, if it does); made once
    per set of tiers."""
    table: dict[str, list[list[str]]] = {}
    for value, _ in (*UPLOAD_LIFETIMES, ("never", "")):
        table[value] = []
        for tier in tiers:
            decision = lifetime.decide(tier.max_size, value, tiers)
            table[value].append([words.lifetime_in_words(decision.lifetime), words.change_in_words(decision, tiers)])
    return json.dumps({"sizes": [t.max_size for t in tiers], "choices": table}, separators=(",", ":"))


@attrs.define
class ImagePages(PageArea):
    """Routes of /images, /images/upload and /images/delete."""

    app: ClassVar[Klein] = Klein()

    @app.route("/images", methods=["GET"])
    async def images(self, request: Any) -> bytes:
        visitor = await self.visitor(request)
        page = _page_number(query(request, "page"))
        sort = _sort_key(query(request, "sort"))
        search = search_text(query(request, "q"))
        at = _cursor_choice(query(request, "after"), query(request, "before"))
        now = self.library.now()
        shown, page, newer, older, total, capped = await self._listing(visitor.account, page, sort, search, at)
        pages = max(1, -(-total // PAGE_SIZE))
        pending = await self.library.pending_derivations([i.id for i in shown])
        strip_default = await self.library.strip_location_default(visitor.account)
        kept = (("q", search), ("sort", sort), ("page", str(page)))
        if at is not None and page > 1:
            kept += (("before" if at[1] else "after", at[0]),)
        listing = GalleryQuery(
            search=search, sort=sort, clear=gallery_link(1, "", sort),
            sorts=tuple(Choice(key, label, key == sort) for key, label in SORT_LABELS),
            keep=tuple((k, v) for k, v in kept if v and (k, v) not in (("sort", "newest"), ("page", "1"))),
            last=gallery_link(pages, search, sort), capped=capped,
        )
        body = ImagesBody(
            visitor.csrf, [self._image_view(i, i.id in pending, now) for i in shown],
            list(upload_lifetimes(self.config.offered_tiers)), words.tiers_in_words(self.config.offered_tiers),
            self.config.max_size, page, total=total, pages=pages,
            lifetime_table=lifetime_table(self.config.offered_tiers),
            newer=newer, older=older,
            listing=listing, strip_location=strip_default,
        )
        notice = NOTICES.get(query(request, "done")) or _deleted_notice(query(request, "deleted"))
        return await self.page(request, "Images", body, visitor, current="/images", notice=notice)

    async def _listing(self, account: str, page: int, sort: str, search: str, at: tuple[str, bool] | None,
                       ) -> tuple[list[Image], int, str | None, str | None, int, bool]:
        """The gallery's images on ``page`` (by number, or at the cursor ``at``), the page
        number to show, the Newer and Older links (None: no such link), the total and
        whether it is capped.  The Newer and Older links carry a cursor (the place of
        the page's first or last image), so paging one page at a time never skips an
        image when others are added or deleted meanwhile, and costs what the first page
        does however deep it is.  Newer to page 1 (or back past the start) shows the
        first page by number (the images added since show there)."""
        if at is not None:
            cursor, before = at
            shown, more, total, capped = await self.library.image_page_at(
                account, cursor, before, PAGE_SIZE, sort=sort, search=search)
            if not before or more:
                first, last = _cursors(shown, sort, cursor)
                newer, older = (True, more) if not before else (more, True)
                if capped and page >= -(-total // PAGE_SIZE):  # a search pages through the matches it counts
                    older = False
                return (shown, page, _newer_link(page, search, sort, first) if newer else None,
                        gallery_link(page + 1, search, sort, after=last) if older else None, total, capped)
            page = 1
        shown, total, capped = await self.library.image_page(account, page, PAGE_SIZE, sort=sort, search=search)
        pages = max(1, -(-total // PAGE_SIZE))
        first, last = _cursors(shown, sort)
        newer = _newer_link(page, search, sort, first) if page > 1 and shown else None
        older = gallery_link(page + 1, search, sort, after=last) if page < pages and shown else None
        return shown, page, newer, older, total, capped

    def _lifetime_note(self, image: Image) -> str:
        """Why the image got another lifetime than its upload asked for ("" if it did not)."""
        return words.stored_change_in_words(image.size, image.asked_expire, image.lifetime,
                                            self.config.offered_tiers)

    def _image_view(self, image: Image, pending: bool, now: float) -> ImageView:
        urls = output.image_urls(self.config.public_url, image.account, image.name)
        return ImageView(
            name=image.name, thumb=f"/thumb/{image.account}/{image.stem}.jpg", original=urls["original"],
            versions=tuple((label, urls[key]) for key, label in VERSION_LABELS),
            type=image.mime.split("/")[-1].upper(), dimensions=f"{image.width} × {image.height}",
            size=words.size_in_words(image.size), uploaded=words.since_in_words(image.uploaded, now),
            uploaded_iso=output.iso_time(image.uploaded), expires=words.until_in_words(image.expires, now),
            expires_iso="" if image.expires is None else output.iso_time(image.expires), pending=pending,
            uploaded_date=words.date_in_words(image.uploaded), expires_date=words.date_in_words(image.expires),
            viewer=output.viewer_url(self.config.public_url, image.account, image.name),
            shares=tuple(c for c in embed.embed_codes(self.config.public_url, image) if c.key in SHARED_CODES),
            lifetime_note=self._lifetime_note(image),
            has_location=image.has_location,
        )

    @app.route("/images/upload", methods=["POST"])
    async def upload(self, request: Any) -> bytes:
        visitor = await self.visitor(request)
        form = await self.form(request, max_files=MAX_FORM_FILES)
        try:
            self.sessions.check_csrf(visitor, form)
            chosen = [f for f in form.files if f.filename or f.size]
            if not chosen:
                raise errors.BadRequest("Choose at least one image to upload.")
            keep_name = output.is_true(form.get("keep_name"))
            # The form's checkbox is the choice (checked from the account's setting):
            # unchecked sends nothing, and means keep the location.
            strip = bool(output.parse_switch("strip_location", form.get("strip_location")))
            results = []
            status = 200
            for uploaded in chosen:
                try:
                    image = await self.library.upload(
                        visitor.account, uploaded.path, uploaded.filename, keep_name=keep_name,
                        expire=form.get("expire") or None, strip_location=strip,
                    )
                except errors.ApiError as e:
                    if status == 200:
                        status = e.status
                    results.append(UploadResult(uploaded.filename, False, sentence(e.message)))
                    continue
                url = output.image_urls(self.config.public_url, image.account, image.name)["original"]
                results.append(UploadResult(
                    uploaded.filename, True, "Stored as", image.name, url, expires=image.expires,
                    kept=words.kept_in_words(image.expires, image.lifetime), note=self._lifetime_note(image),
                    delete_url=output.delete_url(self.config.public_url, image.account, image.name,
                                                 image.delete_secret) if image.delete_secret else ""))
        finally:
            form.discard()
        if wants_json(request):
            return json_response(request, status, {
                "status": "ok" if status == 200 else "error",
                "error": next((r.message for r in results if not r.ok), None),
                "results": [
                    {"file": r.client, "ok": r.ok, "name": r.name or None, "url": r.url or None,
                     "error": None if r.ok else r.message,
                     "expires": None if not r.ok or r.expires is None else output.iso_time(r.expires),
                     "kept": r.kept or None, "lifetime_note": r.note or None,
                     "delete_url": r.delete_url or None}
                    for r in results
                ],
            })
        stored = sum(r.ok for r in results)
        title = f"Uploaded {stored} of {len(results)}" if stored < len(results) else (
            "Uploaded" if stored == 1 else f"Uploaded {stored} images")
        return await self.page(request, title, UploadedBody(results), visitor, current="/images",
                               status=status)

    @app.route("/images/delete", methods=["POST"])
    async def delete(self, request: Any) -> bytes:
        visitor, form = await self.post(request)
        name = (form.get("name") or "").strip()
        image = await self.library.served_image(visitor.account, name)
        if image is None:
            raise errors.NotFound("You have no image of that name (it may be deleted already).")
        if form.get("confirm") != "1":
            body = ConfirmBody(
                f"Delete {image.name}? Its address and every resized copy stop working at once.",
                "/images/delete", {"name": image.name}, visitor.csrf, "Delete", "/images",
                thumb=f"/thumb/{image.account}/{image.stem}.jpg",
            )
            return await self.page(request, "Delete this image?", body, visitor, current="/images",
                                   narrow=True)
        await self.library.delete(visitor.account, image.name)
        return redirect(request, "/images?done=deleted")

    @app.route("/images/delete-selected", methods=["POST"])
    async def delete_selected(self, request: Any) -> bytes:
        """"Delete selected": the names ticked on a gallery page (repeated ``name``
        fields), a confirmation page listing them, then (``confirm=1``) all of them
        deleted in one transaction.  Without confirmation every name must be one of
        the caller's served images (404 naming those that are not); once confirmed,
        images gone meanwhile (deleted elsewhere, expired) refuse the whole request
        (nothing deleted) with a new confirmation for the others."""
        visitor, form = await self.post(request)
        names = selected_names(form.get_all("name"))
        sort = _sort_key(form.get("sort"))
        after = _kept_cursor(form.get("after"), sort)
        back = gallery_link(_page_number(form.get("page")), _kept_search(form.get("q")), sort, after=after,
                            before=None if after else _kept_cursor(form.get("before"), sort))
        kept = [(k, form.get(k) or "") for k in ("q", "sort", "page", "after", "before") if form.get(k)]
        if form.get("confirm") != "1":
            images = [await self.library.served_image(visitor.account, name) for name in names]
            missing = [name for name, image in zip(names, images, strict=True) if image is None]
            if missing:
                raise errors.NotFound(f"you have no image named {_listed(missing)} (deleted or expired "
                                      "already?); nothing was deleted")
            return await self._confirm_several(request, visitor, names, kept, back)
        deleted, missing = await self.library.delete_several(visitor.account, names)
        if missing:
            left = [name for name in names if name not in missing]
            if not left:
                raise errors.NotFound("none of these images is there any more (deleted or expired "
                                      "already); nothing was deleted")
            return await self._confirm_several(
                request, visitor, left, kept, back, status=409,
                gone=f"{_listed(missing)} {'is' if len(missing) == 1 else 'are'} gone already (deleted "
                     "or expired), so nothing was deleted. ")
        return redirect(request, _with_query(back, {"deleted": str(len(deleted))}))

    async def _confirm_several(self, request: Any, visitor: Any, names: list[str], kept: list[tuple[str, str]],
                               back: str, status: int = 200, gone: str = "") -> bytes:
        if len(names) > 1:
            question = (f"{gone}Delete {'the other ' if gone else ''}{len(names)} images? Their addresses "
                        "and every resized copy stop working at once.")
        else:
            question = (f"{gone}Delete {'the other image' if gone else 'this image'}? Its address and every "
                        "resized copy stop working at once.")
        body = ConfirmBody(
            question,
            "/images/delete-selected", [*(("name", name) for name in names), *kept], visitor.csrf,
            f"Delete {len(names)} image{'s' if len(names) > 1 else ''}", back, items=names,
        )
        title = "Delete these images?" if len(names) > 1 else "Delete this image?"
        return await self.page(request, title, body, visitor, current="/images", narrow=True, status=status)

    @app.handle_errors(Exception)
    async def failed(self, request: Any, failure: Failure) -> bytes:
        return await self.render_failure(request, failure)


#: The gallery's orders (``?sort=``), as the form offers them.
SORT_LABELS = (("newest", "Newest first"), ("oldest", "Oldest first"), ("largest", "Largest first"))


def gallery_link(page: int, search: str = "", sort: str = "newest", *, after: str | None = None,
                 before: str | None = None) -> str:
    """The gallery's address showing ``page`` of ``search`` in ``sort``'s order (the
    defaults left out), read at the cursor ``after`` or ``before`` if given."""
    fields = {"q": search, "sort": "" if sort == "newest" else sort, "page": "" if page <= 1 else str(page),
              "after": after or "", "before": before or ""}
    return _with_query("/images", fields)


def _newer_link(page: int, search: str, sort: str, first: str | None) -> str:
    """The Newer link of ``page``: the page before the place ``first`` (its first
    image), or the first page by number when that is the one before."""
    return gallery_link(page - 1, search, sort, before=first) if page > 2 else gallery_link(1, search, sort)


def _cursors(shown: list[Image], sort: str, at: str | None = None) -> tuple[str | None, str | None]:
    """The cursors of a page's first and last image (``at``, the cursor the page was
    read at, both ways when it is empty)."""
    if not shown:
        return at, at
    return (cursors.encode(cursors.position_of(sort, shown[0])),
            cursors.encode(cursors.position_of(sort, shown[-1])))


def _cursor_choice(after: str | None, before: str | None) -> tuple[str, bool] | None:
    """The cursor the gallery is read at, ``(cursor, before)``, or None; BadRequest for
    both at once (a cursor itself is checked when it is read)."""
    if after is not None and before is not None:
        raise errors.BadRequest("after and before: one cursor at a time")
    if after is None and before is None:
        return None
    return (after, False) if after is not None else (before or "", True)


def _with_query(path: str, fields: dict[str, str]) -> str:
    given = {k: v for k, v in fields.items() if v}
    if not given:
        return path
    return path + ("&" if "?" in path else "?") + urlencode(given)


def _page_number(text: str | None) -> int:
    """A page number from the query; anything else is the first page (as a page past
    the end is an empty page, not an error)."""
    try:
        return min(max(1, int(text or "1")), 100_000)
    except ValueError:
        return 1


def _sort_key(text: str | None) -> str:
    """A sort from the query; an unknown one falls back to newest first, as a bad page
    number falls back to the first page."""
    return text if text in SORTS else "newest"


def _kept_search(text: str | None) -> str:
    """The search a form carries back to the gallery; one that would be refused is dropped."""
    try:
        return search_text(text)
    except errors.BadRequest:
        return ""


def _kept_cursor(text: str | None, sort: str) -> str | None:
    """The cursor a form carries back to the gallery; one that would be refused is dropped."""
    try:
        return None if text is None else cursors.encode(cursors.decode(text, sort))
    except errors.BadRequest:
        return None


def _listed(names: list[str]) -> str:
    """Names in a sentence: the first five, then how many more."""
    shown = ", ".join(names[:5])
    return shown if len(names) <= 5 else f"{shown} and {len(names) - 5} more"


def _deleted_notice(text: str | None) -> str | None:
    """The notice after a multiple delete (``?deleted=N``)."""
    if not text or not text.isascii() or not text.isdigit() or not 1 <= int(text) <= MAX_SELECTED:
        return None
    n = int(text)
    return f"Deleted {n} image{'s' if n > 1 else ''}. Every version of {'them' if n > 1 else 'it'} stopped working."
