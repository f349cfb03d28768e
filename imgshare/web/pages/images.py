"""The gallery, the upload form and image deletion (SPEC section 9), under
``/images``.  Uploads go through ``ImageLibrary.upload`` exactly as the API's do."""

from __future__ import annotations

import json
from typing import Any, ClassVar

import attrs
from klein import Klein
from twisted.python.failure import Failure

from imgshare.domain import embed, errors, lifetime, output, words
from imgshare.domain.records import Image
from imgshare.web.http import query
from imgshare.web.pages.base import NOTICES, PageArea, json_response, redirect, sentence, wants_json
from imgshare.web.views import (
    Choice,
    ConfirmBody,
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


@attrs.define
class ImagePages(PageArea):
    """Routes of /images, /images/upload and /images/delete."""

    app: ClassVar[Klein] = Klein()

    @app.route("/images", methods=["GET"])
    async def images(self, request: Any) -> bytes:
        visitor = await self.visitor(request)
        try:
            page = min(max(1, int(query(request, "page") or "1")), 100_000)
        except ValueError:
            page = 1
        now = self.library.now()
        shown, total = await self.library.image_page(visitor.account, page, PAGE_SIZE)
        pages = max(1, -(-total // PAGE_SIZE))
        pending = await self.library.pending_derivations([i.id for i in shown])
        strip_default = await self.library.strip_location_default(visitor.account)
        newer = min(page - 1, pages)
        body = ImagesBody(
            visitor.csrf, [self._image_view(i, i.id in pending, now) for i in shown],
            self._upload_lifetimes(), words.tiers_in_words(self.config.offered_tiers),
            self.config.max_size, page, total=total, pages=pages, lifetime_table=self._lifetime_table(),
            newer=(_page_link(newer)) if page > 1 else None,
            older=_page_link(page + 1) if page < pages else None, strip_location=strip_default,
        )
        return await self.page(request, "Images", body, visitor, current="/images",
                               notice=NOTICES.get(query(request, "done")))

    def _upload_lifetimes(self) -> list[Choice]:
        """The form's lifetime choices, each saying which sizes may have it (a choice no
        size may have is left out)."""
        tiers = self.config.offered_tiers
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
        return choices

    def _lifetime_table(self) -> str:
        """For the script of the form: what each choice gives each size, as the server
        decides it (``sizes``: the tiers' largest sizes; ``choices``: per choice, per
        tier, the lifetime in words and why it differs from the choice, if it does)."""
        tiers = self.config.offered_tiers
        table: dict[str, list[list[str]]] = {}
        for value, _ in (*UPLOAD_LIFETIMES, ("never", "")):
            table[value] = []
            for tier in tiers:
                decision = lifetime.decide(tier.max_size, value, tiers)
                table[value].append([words.lifetime_in_words(decision.lifetime),
                                     words.change_in_words(decision, tiers)])
        return json.dumps({"sizes": [t.max_size for t in tiers], "choices": table}, separators=(",", ":"))

    def _lifetime_note(self, image: Image) -> str:
        """Why the image got another lifetime than its upload asked for ("" if it did not)."""
        kept = None if image.expires is None else image.expires - image.uploaded
        return words.stored_change_in_words(image.size, image.asked_expire, kept, self.config.offered_tiers)

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
                kept = None if image.expires is None else image.expires - image.uploaded
                results.append(UploadResult(
                    uploaded.filename, True, "Stored as", image.name, url, expires=image.expires,
                    kept=words.kept_in_words(image.expires, kept), note=self._lifetime_note(image),
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

    @app.handle_errors(Exception)
    async def failed(self, request: Any, failure: Failure) -> bytes:
        return await self.render_failure(request, failure)


def _page_link(page: int) -> str:
    return "/images" if page <= 1 else f"/images?page={page}"
