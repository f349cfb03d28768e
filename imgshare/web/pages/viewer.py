"""The public viewer page of an image (SPEC section 9), under ``/i/<account>/<file>``:
the XGA copy, its facts, links to every version, embed codes with copy buttons,
and the Open Graph / Twitter card tags that let chat apps show a preview.

It answers 404 exactly when ``/img/<account>/<file>`` does (the same
``ImageLibrary.served_image``), and shows nothing the owner keeps private: no
thumbnail, no tokens, no other images.
"""

from __future__ import annotations

from typing import Any, ClassVar

import attrs
from klein import Klein
from twisted.python.failure import Failure

from imgshare.derive import fit_size
from imgshare.domain import embed, errors, naming, output, words
from imgshare.domain.records import Image
from imgshare.web.pages.base import PageArea
from imgshare.web.views import VersionLink, ViewerBody, ViewerView

VERSION_LABELS = (("original", "Original"), ("xga", "XGA"), ("vga", "VGA"), ("qvga", "QVGA"))


@attrs.define
class ViewerPages(PageArea):
    """The route of /i/<account>/<file>."""

    app: ClassVar[Klein] = Klein()

    @app.route("/i/<account>/<name>", methods=["GET", "HEAD"])
    async def viewer(self, request: Any, account: str, name: str) -> bytes:
        image = await self.library.served_image(account, name)
        if image is None:
            raise errors.NotFound("There is no image at this address (it may have been deleted or expired).")
        sizes = await self.version_sizes(image)
        public = self.config.public_url
        urls = output.image_urls(public, image.account, image.name)
        xga = sizes["xga"]
        view = ViewerView(
            name=image.name, alt=embed.alt_text(image), xga=embed.xga_path(image),
            xga_width=xga[0], xga_height=xga[1], original=urls["original"],
            type=image.mime.split("/")[-1].upper(), size=words.size_in_words(image.size),
            dimensions=f"{image.width} × {image.height}",
            uploaded=words.since_in_words(image.uploaded, self.library.now()),
            uploaded_iso=output.iso_time(image.uploaded), uploaded_date=words.date_in_words(image.uploaded),
            versions=tuple(VersionLink(label, urls[key], "{} × {}".format(*sizes[key]))
                           for key, label in VERSION_LABELS),
            embeds=tuple(embed.embed_codes(public, image)),
        )
        visitor = await self.sessions.visitor(request)
        if visitor is not None and visitor.account == image.account and image.has_location:
            view = attrs.evolve(view, owner_location=True)
        return await self.page(request, image.name, ViewerBody(view), visitor,
                               meta=embed.card_tags(public, image, xga))

    async def version_sizes(self, image: Image) -> dict[str, tuple[int, int]]:
        """Each version's width and height: the derived file's own once it is made, else
        the original's upright size (recorded at upload, EXIF orientation applied)
        fitted into its box without upscaling, as the derivation will make it.  The
        two agree; for an image recorded before uploads read the orientation, the
        made file's size is the right one."""
        sizes = {"original": (image.width, image.height)}
        made = await self.library.made_variants(image)
        for variant in naming.VARIANTS:
            found = made.get(variant)
            sizes[variant] = ((found.width, found.height) if found is not None
                              else fit_size((image.width, image.height), naming.VARIANT_BOXES[variant]))
        return sizes

    @app.handle_errors(Exception)
    async def failed(self, request: Any, failure: Failure) -> bytes:
        return await self.render_failure(request, failure)
