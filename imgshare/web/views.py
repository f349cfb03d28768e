"""The browser pages' HTML: ``twisted.web.template`` elements over the XHTML files
of the top-level ``templates/`` folder, installed as the package ``imgshare.templates``
(one shared layout, one body template per page).

Routes (``imgshare.web.pages``) gather the data into the records below; the
elements only place it.  Every value goes through the template flattener,
which escapes text and attribute values: user data is never marked raw.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.resources
from collections.abc import Iterator, Sequence
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import attrs
from twisted.web.template import Element, Tag, TagLoader, XMLString, flattenString, renderer, tags

from imgshare import __version__
from imgshare.domain import words
from imgshare.web import markup

PACKAGE_DATA = importlib.resources.files("imgshare")


def template_folder() -> Traversable:
    """Where the page templates are: in a source tree (the ``imgshare`` folder beside
    ``setup.cfg``), its top-level ``templates/``, so a second checkout or a worktree
    never renders the installed one's; else the package ``imgshare.templates`` (a
    wheel, or an editable install that maps packages)."""
    checkout = Path(__file__).resolve().parents[2]
    if (checkout / "setup.cfg").is_file() and (checkout / "templates" / "layout.xhtml").is_file():
        # A source tree: its own templates, even when another checkout is the installed one.
        return checkout / "templates"
    try:
        installed = importlib.resources.files("imgshare.templates")
    except ModuleNotFoundError:
        installed = None
    if installed is not None and installed.joinpath("layout.xhtml").is_file():
        return installed
    # Not installed; an empty imgshare/templates/ left in a checkout is passed over too.
    return Path(__file__).resolve().parents[2] / "templates"


TEMPLATES = template_folder()

#: Headers on every page (and on the pages' JSON answers).
PAGE_HEADERS = {
    b"Content-Security-Policy": (
        b"default-src 'self'; img-src 'self'; script-src 'self'; style-src 'self'; "
        b"frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
    ),
    b"X-Content-Type-Options": b"nosniff",
    b"Referrer-Policy": b"same-origin",
    b"X-Frame-Options": b"DENY",
    b"Cache-Control": b"no-store",
}

#: The navigation of a logged-in visitor: (path, label).
MENU = (("/images", "Images"), ("/tokens", "Tokens"), ("/account", "Account"))


@functools.cache
def template(name: str) -> XMLString:
    """The loader of the page template ``templates/<name>`` (parsed once)."""
    return XMLString(TEMPLATES.joinpath(name).read_text("utf-8"))


@attrs.frozen
class StaticFile:
    """One file under ``/static/``: its bytes, type and a validator."""

    data: bytes
    mime: str
    etag: str


STATIC_TYPES = {
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
}


@functools.cache
def static_files() -> dict[str, StaticFile]:
    """Every file of ``imgshare/static/`` by name (read once)."""
    found = {}
    for entry in PACKAGE_DATA.joinpath("static").iterdir():
        suffix = "." + entry.name.rsplit(".", 1)[-1]
        if suffix in STATIC_TYPES:
            data = entry.read_bytes()
            found[entry.name] = StaticFile(data, STATIC_TYPES[suffix], hashlib.sha256(data).hexdigest()[:16])
    return found


def static_url(name: str) -> str:
    """``/static/<name>?v=<digest>``: a new version is a new URL, so caches may keep it."""
    return f"/static/{name}?v={static_files()[name].etag}"


def set_page_headers(request: Any) -> None:
    for name, value in PAGE_HEADERS.items():
        request.setHeader(name, value)


async def render(request: Any, page: Layout, status: int = 200) -> bytes:
    """The page's HTML with the security headers and ``status``."""
    set_page_headers(request)
    request.setHeader(b"Content-Type", b"text/html; charset=utf-8")
    request.setResponseCode(status)
    try:
        html = markup.flatten(request, page)
    except markup.NotSynchronous:  # a renderer gave a Deferred: Twisted's own flattener waits for it
        html = await flattenString(request, page)
    return b"<!DOCTYPE html>\n" + html


def _shown_if(condition: Any, tag: Tag) -> Tag | str:
    return tag if condition else ""


def _hidden(name: str, value: str) -> Tag:
    return tags.input(type="hidden", name=name, value=value)


# ------------------------------------------------------------------ layout


class Layout(Element):
    """The frame of every page: header with the menu, title, notices, footer."""

    loader = template("layout.xhtml")

    def __init__(
        self, title: str, content: Element, visitor: Any = None, *, current: str = "",
        notice: Any = None, problem: str | None = None, registration: bool = False, narrow: bool = False,
        meta: Sequence[tuple[str, str, str]] = (),
    ):
        super().__init__()
        self.title = title
        #: Extra ``<meta>`` tags as (attribute, key, content): ("property", "og:url", …).
        self.meta_tags = meta
        self.body_element = content
        self.visitor = visitor
        self.current = current
        self.notice_text = notice
        self.problem_text = problem
        self.registration = registration
        self.narrow = narrow

    @renderer
    def page(self, request: Any, tag: Tag) -> Tag:
        return tag.fillSlots(
            title=self.title, css=static_url("app.css"), js=static_url("app.js"),
            icon=static_url("icon.svg"), version=__version__,
            main_class="page narrow-page" if self.narrow else "page",
        )

    @renderer
    def menu(self, request: Any, tag: Tag) -> Tag:
        if self.visitor is None:
            links = [("/login", "Log in")] + ([("/register", "Register")] if self.registration else [])
        else:
            links = list(MENU)
            tag.attributes["class"] = "menu signed-in"
        for path, label in links:
            link = tags.a(label, href=path)
            if path == self.current:
                link(**{"aria-current": "page"})
            tag(link)
        if self.visitor is not None:
            tag(tags.form(
                _hidden("csrf", self.visitor.csrf),
                tags.button(
                    "Log out ", tags.span(self.visitor.account, class_="who"), type="submit", class_="link",
                ),
                method="post", action="/logout", class_="logout",
            ))
        return tag

    @renderer
    def meta(self, request: Any, tag: Tag) -> Iterator[Tag]:
        for attribute, key, content in self.meta_tags:
            yield tag.clone()(**{attribute: key, "content": content})

    @renderer
    def notice(self, request: Any, tag: Tag) -> Tag | str:
        return tag.fillSlots(text=self.notice_text) if self.notice_text else ""

    @renderer
    def problem(self, request: Any, tag: Tag) -> Tag | str:
        return tag.fillSlots(text=self.problem_text) if self.problem_text else ""

    @renderer
    def content(self, request: Any, tag: Tag) -> Element:
        return self.body_element


# ------------------------------------------------------- logging in and out


class LoginBody(Element):
    loader = template("login.xhtml")

    def __init__(self, csrf: str, name: str = "", next_path: str = "", *, no_accounts: bool = False,
                 registration: bool = False):
        super().__init__()
        self.csrf, self.name, self.next_path = csrf, name, next_path
        self.no_accounts, self.registration = no_accounts, registration

    @renderer
    def form(self, request: Any, tag: Tag) -> Tag:
        return tag.fillSlots(csrf=self.csrf, name=self.name, next=self.next_path)

    @renderer
    def when_no_accounts(self, request: Any, tag: Tag) -> Tag | str:
        return _shown_if(self.no_accounts, tag)

    @renderer
    def when_registration(self, request: Any, tag: Tag) -> Tag | str:
        return _shown_if(self.registration, tag)


class NewAccountBody(Element):
    """The setup and register forms: name, password twice."""

    loader = template("setup.xhtml")

    def __init__(self, action: str, csrf: str, intro: str, button: str, *, name: str = "", code: str = ""):
        super().__init__()
        self.action, self.csrf, self.intro_text, self.button = action, csrf, intro, button
        self.name, self.code = name, code

    @renderer
    def form(self, request: Any, tag: Tag) -> Tag:
        return tag.fillSlots(action=self.action, csrf=self.csrf, button=self.button, name=self.name,
                             code=self.code)

    @renderer
    def intro(self, request: Any, tag: Tag) -> Tag | str:
        return tag.fillSlots(text=self.intro_text) if self.intro_text else ""


class MessageBody(Element):
    """A short message with one link onwards (errors, used-up links)."""

    loader = template("message.xhtml")

    def __init__(self, text: str, link: str = "/", link_text: str = "Go to the start page"):
        super().__init__()
        self.text, self.link, self.link_text = text, link, link_text

    @renderer
    def message(self, request: Any, tag: Tag) -> Tag:
        return tag.fillSlots(text=self.text, link=self.link, link_text=self.link_text)


class ConfirmBody(Element):
    """The confirmation step of a destructive POST, for browsers without JavaScript."""

    loader = template("confirm.xhtml")

    def __init__(self, question: str, action: str, fields: dict[str, str] | Sequence[tuple[str, str]],
                 csrf: str, button: str, cancel: str, thumb: str | None = None, items: Sequence[str] = ()):
        super().__init__()
        self.question, self.action = question, action
        #: The hidden fields, as (name, value) pairs: a name may repeat.
        self.field_values = list(fields.items()) if isinstance(fields, dict) else list(fields)
        self.csrf, self.button, self.cancel, self.thumb = csrf, button, cancel, thumb
        #: What the action will affect, listed under the question.
        self.item_texts = items

    @renderer
    def confirm(self, request: Any, tag: Tag) -> Tag:
        return tag.fillSlots(question=self.question, action=self.action, csrf=self.csrf,
                             button=self.button, cancel=self.cancel, thumb=self.thumb or "")

    @renderer
    def when_thumb(self, request: Any, tag: Tag) -> Tag | str:
        return _shown_if(self.thumb, tag)

    @renderer
    def fields(self, request: Any, tag: Tag) -> Iterator[Tag]:
        for name, value in self.field_values:
            yield tag.clone()(name=name, value=value)

    @renderer
    def when_items(self, request: Any, tag: Tag) -> Tag | str:
        return _shown_if(self.item_texts, tag)

    @renderer
    def items(self, request: Any, tag: Tag) -> Iterator[Tag]:
        for text in self.item_texts:
            yield tag.clone().fillSlots(name=text)


# ------------------------------------------------------------------ images


@attrs.frozen
class Choice:
    """One option of a select."""

    value: str
    label: str
    selected: bool = False


def _options(tag: Tag, choices: Sequence[Choice]) -> Iterator[Tag]:
    for choice in choices:
        option = tag.clone().fillSlots(value=choice.value, label=choice.label)
        if choice.selected:
            option(selected="selected")
        yield option


@attrs.frozen
class ImageView:
    """One image of the gallery, ready to show."""

    name: str
    thumb: str
    original: str
    versions: tuple[tuple[str, str], ...]  # (label, URL)
    type: str
    dimensions: str
    size: str
    uploaded: str
    uploaded_iso: str
    expires: str
    expires_iso: str
    pending: bool
    #: The same moments as dates (``14 Feb 2026, 09:30 UTC``), shown beside the words.
    uploaded_date: str = ""
    expires_date: str = ""
    #: The public viewer page, and the codes to share it (``domain.embed.EmbedCode``).
    viewer: str = ""
    shares: tuple[Any, ...] = ()
    #: Why it got another lifetime than its upload asked for ("" when it did not).
    lifetime_note: str = ""
    #: The original carries GPS coordinates (a badge says so).
    has_location: bool = False


@attrs.frozen
class GalleryQuery:
    """What the gallery shows: a search (``q``, may be empty), an order, and the
    links that keep them (``link(page)``)."""

    search: str = ""
    sort: str = "newest"
    #: The sort choices, the current one selected.
    sorts: tuple[Choice, ...] = ()
    #: The gallery without the search (the same order).
    clear: str = "/images"
    #: The fields the multiple delete carries back to this very listing.
    keep: tuple[tuple[str, str], ...] = ()
    #: The last page's link.
    last: str = "/images"
    #: More images match the search than it counts (``SEARCH_COUNT_CAP``): only those are shown.
    capped: bool = False


class ImagesBody(Element):
    loader = template("images.xhtml")

    def __init__(self, csrf: str, images: Sequence[ImageView], lifetimes: Sequence[Choice],
                 tiers: Sequence[str], max_bytes: int, page: int, newer: str | None, older: str | None,
                 total: int = 0, pages: int = 1, lifetime_table: str = "{}", strip_location: bool = False,
                 listing: GalleryQuery | None = None):
        super().__init__()
        self.csrf, self.image_views, self.lifetime_choices = csrf, images, lifetimes
        self.lifetime_table, self.strip_location = lifetime_table, strip_location
        self.tier_texts, self.max_bytes = tiers, max_bytes
        self.max_size = words.size_in_words(max_bytes)
        self.page, self.newer, self.older = page, newer, older
        self.total, self.pages = total, pages
        self.listing = listing or GalleryQuery(last="/images" if pages == 1 else f"/images?page={pages}")

    @renderer
    def body(self, request: Any, tag: Tag) -> Tag:
        return tag.fillSlots(csrf=self.csrf, max_size=self.max_size, max_bytes=str(self.max_bytes),
                             lifetime_table=self.lifetime_table)

    @renderer
    def lifetimes(self, request: Any, tag: Tag) -> Iterator[Tag]:
        return _options(tag, self.lifetime_choices)

    @renderer
    def strip_location_box(self, request: Any, tag: Tag) -> Tag:
        """The "remove location" checkbox, checked when the account's setting is on."""
        return tag(checked="checked") if self.strip_location else tag

    @renderer
    def tiers(self, request: Any, tag: Tag) -> Iterator[Tag]:
        for text in self.tier_texts:
            yield tag.clone().fillSlots(text=text)

    @renderer
    def count(self, request: Any, tag: Tag) -> Tag | str:
        """``(N)``: every image the account has, on every page; with a search, how many match."""
        if self.listing.search:
            many = f"more than {self.total:,}".replace(",", " ") if self.listing.capped else str(self.total)
            return tag.fillSlots(text=f"({many} matching “{self.listing.search}”)")
        return tag.fillSlots(text=f"({self.total})") if self.total else ""

    @renderer
    def search_form(self, request: Any, tag: Tag) -> Tag | str:
        """The search and sort form, once there is anything to search."""
        if not self.total and not self.listing.search:
            return ""
        return tag.fillSlots(q=self.listing.search, clear=self.listing.clear)

    @renderer
    def sorts(self, request: Any, tag: Tag) -> Iterator[Tag]:
        return _options(tag, self.listing.sorts)

    @renderer
    def when_searching(self, request: Any, tag: Tag) -> Tag | str:
        return _shown_if(self.listing.search, tag)

    @renderer
    def when_empty(self, request: Any, tag: Tag) -> Tag | str:
        return _shown_if(not self.total and not self.listing.search, tag)

    @renderer
    def when_nothing_found(self, request: Any, tag: Tag) -> Tag | str:
        """A search that matches nothing: say so, and link to the gallery without it."""
        if self.total or not self.listing.search:
            return ""
        return tag.fillSlots(q=self.listing.search, clear=self.listing.clear)

    @renderer
    def when_past_the_end(self, request: Any, tag: Tag) -> Tag | str:
        """A page beyond the last: say so, and link to the last one."""
        if not self.total or self.image_views:
            return ""
        which = "your images"
        if self.listing.search:
            which = (f"the first {self.total:,} matching images (a search shows no more: refine it)".replace(",", " ")
                     if self.listing.capped else "the matching images")
        pages = "1 page" if self.pages == 1 else f"{self.pages} pages"
        return tag.fillSlots(page=str(self.page), pages=pages, last=self.listing.last, which=which)

    @renderer
    def bulk(self, request: Any, tag: Tag) -> Tag | str:
        """The form of "Delete selected", whose checkboxes are on the cards."""
        return tag.fillSlots(csrf=self.csrf) if self.image_views else ""

    @renderer
    def keep(self, request: Any, tag: Tag) -> Iterator[Tag]:
        for name, value in self.listing.keep:
            yield tag.clone()(name=name, value=value)

    @renderer
    def images(self, request: Any, tag: Tag) -> Iterator[Element]:
        for image in self.image_views:
            # A shallow copy is enough: flattening never changes a template's nodes
            # (a renderer is handed a copy of its own tag), and the card is ~100 of them.
            yield ImageItem(image, tag.clone(False), self.csrf)

    @renderer
    def pager(self, request: Any, tag: Tag) -> Tag | str:
        """Past the last page there is no pager, only the message linking to the last."""
        if not self.image_views or (not self.newer and not self.older):
            return ""
        return tag.fillSlots(page=str(self.page), pages=str(self.pages), newer=self.newer or "",
                             older=self.older or "")

    @renderer
    def when_newer(self, request: Any, tag: Tag) -> Tag | str:
        return _shown_if(self.newer, tag)

    @renderer
    def when_older(self, request: Any, tag: Tag) -> Tag | str:
        return _shown_if(self.older, tag)


class ImageItem(Element):
    """One gallery card: a copy of the template's ``<li>``, filled for one image."""

    def __init__(self, image: ImageView, tag: Tag, csrf: str):
        super().__init__(loader=TagLoader(tag.fillSlots(
            name=image.name, thumb=image.thumb, original=image.original, type=image.type,
            dimensions=image.dimensions, size=image.size, uploaded=image.uploaded,
            uploaded_iso=image.uploaded_iso, expires=image.expires, expires_iso=image.expires_iso,
            uploaded_date=image.uploaded_date, expires_date=image.expires_date, csrf=csrf,
            viewer=image.viewer,
        )))
        self.image = image

    @renderer
    def shares(self, request: Any, tag: Tag) -> Iterator[Tag]:
        for code in self.image.shares:
            yield tag.clone().fillSlots(label=code.label, code=code.code)

    @renderer
    def when_ready(self, request: Any, tag: Tag) -> Tag | str:
        return _shown_if(not self.image.pending, tag)

    @renderer
    def lifetime_note(self, request: Any, tag: Tag) -> Tag | str:
        return tag(self.image.lifetime_note) if self.image.lifetime_note else ""

    @renderer
    def when_pending(self, request: Any, tag: Tag) -> Tag | str:
        return _shown_if(self.image.pending, tag)

    @renderer
    def when_location(self, request: Any, tag: Tag) -> Tag | str:
        return _shown_if(self.image.has_location, tag)

    @renderer
    def versions(self, request: Any, tag: Tag) -> Iterator[Tag]:
        for label, url in self.image.versions:
            yield tag.clone().fillSlots(label=label, url=url)


@attrs.frozen
class UploadResult:
    """What became of one file of a form upload."""

    client: str
    ok: bool
    message: str
    name: str = ""
    url: str = ""
    #: A stored file's expiry (None: permanent), its lifetime in words and why it is not
    #: what was asked for ("" when it is).
    expires: float | None = None
    kept: str = ""
    note: str = ""
    #: Its secret delete link: shown with the result only (the database keeps its hash).
    delete_url: str = ""


class UploadedBody(Element):
    loader = template("uploaded.xhtml")

    def __init__(self, results: Sequence[UploadResult]):
        super().__init__()
        self.outcomes = results

    @renderer
    def body(self, request: Any, tag: Tag) -> Tag:
        return tag

    @renderer
    def results(self, request: Any, tag: Tag) -> Iterator[Tag]:
        for r in self.outcomes:
            link = [tags.a(r.name, href=r.url), "."] if r.url else ""
            details = [" ", r.kept] if r.kept else []
            if r.note:
                details += [" ", tags.span(r.note, class_="note")]
            if r.delete_url:
                details += [" ", tags.span(tags.a("Secret delete link", href=r.delete_url, rel="nofollow"),
                                           " (shown only now: keep it to delete the image without logging in).",
                                           class_="delete-link")]
            yield tag.clone().fillSlots(
                client=r.client or "(no name)", outcome=r.message, link=link,
                state="ok" if r.ok else "failed", details=details,
            )


# ------------------------------------------- viewer pages and delete links


@attrs.frozen
class VersionLink:
    """One version of an image on its viewer page."""

    label: str
    url: str
    dimensions: str


@attrs.frozen
class ViewerView:
    """A public viewer page: nothing on it is private to the owner."""

    name: str
    alt: str
    xga: str  # path of the XGA copy on this site
    xga_width: int
    xga_height: int
    original: str
    type: str
    size: str
    dimensions: str
    uploaded: str
    uploaded_iso: str
    versions: tuple[VersionLink, ...]
    embeds: tuple[Any, ...]  # domain.embed.EmbedCode
    uploaded_date: str = ""
    #: Shown to the owner only: the original carries GPS coordinates (the file tells
    #: anyone who has it; the page tells no one else).
    owner_location: bool = False


def _scalar_slots(view: Any) -> dict[str, str]:
    """Every text or number field of an attrs view, as the template slot of its name."""
    return {f.name: str(getattr(view, f.name)) for f in attrs.fields(type(view))
            if isinstance(getattr(view, f.name), str | int)}


class ViewerBody(Element):
    loader = template("viewer.xhtml")

    def __init__(self, view: ViewerView):
        super().__init__()
        self.view = view

    @renderer
    def body(self, request: Any, tag: Tag) -> Tag:
        return tag.fillSlots(**_scalar_slots(self.view))

    @renderer
    def when_owner_location(self, request: Any, tag: Tag) -> Tag | str:
        return _shown_if(self.view.owner_location, tag)

    @renderer
    def versions(self, request: Any, tag: Tag) -> Iterator[Tag]:
        for version in self.view.versions:
            yield tag.clone().fillSlots(label=version.label, url=version.url, dimensions=version.dimensions)

    @renderer
    def embeds(self, request: Any, tag: Tag) -> Iterator[Tag]:
        for embed in self.view.embeds:
            yield tag.clone().fillSlots(label=embed.label, id=f"embed-{embed.key}", code=embed.code)


@attrs.frozen
class DeleteLinkView:
    """The confirmation page of a secret delete link."""

    name: str
    preview: str  # path of the QVGA copy on this site
    preview_width: int
    preview_height: int
    type: str
    size: str
    dimensions: str
    uploaded: str
    uploaded_iso: str
    expires: str
    expires_iso: str
    csrf: str
    uploaded_date: str = ""
    expires_date: str = ""


class DeleteLinkBody(Element):
    loader = template("delete.xhtml")

    def __init__(self, view: DeleteLinkView):
        super().__init__()
        self.view = view

    @renderer
    def body(self, request: Any, tag: Tag) -> Tag:
        return tag.fillSlots(**_scalar_slots(self.view))


# ------------------------------------------------------------------ tokens


@attrs.frozen
class TokenView:
    id: int
    label: str
    created: str
    created_iso: str
    expires: str
    expires_iso: str
    last_used: str
    created_date: str = ""
    expires_date: str = ""
    last_used_date: str = ""


@attrs.frozen
class FreshToken:
    """A token just made: its secret is on this page and nowhere else."""

    secret: str
    curl: str
    #: Where ShareX's built-in Chevereto uploader is pointed (``B/api/1/upload``).
    chevereto_url: str = ""


class TokensBody(Element):
    loader = template("tokens.xhtml")

    def __init__(self, csrf: str, tokens: Sequence[TokenView], lifetimes: Sequence[Choice],
                 fresh: FreshToken | None = None, label: str = "", custom: str = ""):
        super().__init__()
        self.csrf, self.token_views, self.lifetime_choices = csrf, tokens, lifetimes
        self.fresh_token, self.label, self.custom = fresh, label, custom

    @renderer
    def body(self, request: Any, tag: Tag) -> Tag:
        return tag.fillSlots(csrf=self.csrf, label=self.label, custom=self.custom)

    @renderer
    def fresh(self, request: Any, tag: Tag) -> Tag | str:
        if self.fresh_token is None:
            return ""
        return tag.fillSlots(secret=self.fresh_token.secret, curl=self.fresh_token.curl,
                             chevereto_url=self.fresh_token.chevereto_url)

    @renderer
    def lifetimes(self, request: Any, tag: Tag) -> Iterator[Tag]:
        return _options(tag, self.lifetime_choices)

    @renderer
    def when_empty(self, request: Any, tag: Tag) -> Tag | str:
        return _shown_if(not self.token_views, tag)

    @renderer
    def when_any(self, request: Any, tag: Tag) -> Tag | str:
        return _shown_if(self.token_views, tag)

    @renderer
    def tokens(self, request: Any, tag: Tag) -> Iterator[Tag]:
        for t in self.token_views:
            yield tag.clone().fillSlots(**{**_scalar_slots(t), "label": t.label or "(no label)"})


# ----------------------------------------------------------------- account


@attrs.frozen
class AccountView:
    name: str
    role: str
    created: str
    created_iso: str
    is_self: bool
    is_admin: bool = False
    #: What its images use, in words ("12 images, 3.4 MiB of 10.0 MiB (34%)").
    usage: str = ""
    #: Its limits as the quota form shows them ("10MiB", "500"; "" for none).
    quota_bytes: str = ""
    quota_images: str = ""
    created_date: str = ""


@attrs.frozen
class MeterView:
    """One labelled ``<meter>``: ``value`` of ``maximum``; past ``low`` it shows a warning,
    past ``high`` an alarm; ``text`` says the same in words."""

    label: str
    value: int
    maximum: int
    low: int
    high: int
    text: str


@attrs.frozen
class UsageView:
    """The visitor's own usage on /account: a sentence, the meters against its limits, a hint."""

    summary: str
    meters: tuple[MeterView, ...] = ()
    hint: str = ""
    state: str = "ok"  # ok, near or full


class AccountBody(Element):
    loader = template("account.xhtml")

    def __init__(self, csrf: str, account: str, is_admin: bool, accounts: Sequence[AccountView],
                 new_name: str = "", strip_location: bool = False, usage: UsageView | None = None):
        super().__init__()
        self.csrf, self.account, self.is_admin = csrf, account, is_admin
        self.account_views, self.new_name = accounts, new_name
        self.strip_location, self.usage_view = strip_location, usage

    @renderer
    def body(self, request: Any, tag: Tag) -> Tag:
        return tag.fillSlots(csrf=self.csrf, account=self.account, new_name=self.new_name,
                             role=" (administrator)" if self.is_admin else "")

    @renderer
    def usage(self, request: Any, tag: Tag) -> Tag | str:
        view = self.usage_view
        if view is None:
            return ""
        tag.attributes["class"] = f"card usage usage-{view.state}"
        return tag.fillSlots(summary=view.summary, hint=view.hint)

    @renderer
    def usage_hint(self, request: Any, tag: Tag) -> Tag | str:
        return _shown_if(self.usage_view is not None and self.usage_view.hint, tag)

    @renderer
    def meters(self, request: Any, tag: Tag) -> Iterator[Tag]:
        for number, m in enumerate(self.usage_view.meters if self.usage_view else ()):
            yield tag.clone().fillSlots(
                id=f"usage-meter-{number}", text_id=f"usage-meter-{number}-text", label=m.label,
                value=str(m.value), max=str(m.maximum), low=str(m.low), high=str(m.high), text=m.text,
            )

    @renderer
    def admin(self, request: Any, tag: Tag) -> Tag | str:
        return _shown_if(self.is_admin, tag)

    @renderer
    def location_keep(self, request: Any, tag: Tag) -> Tag:
        """The "keep the location" choice, checked while the setting is off."""
        return tag if self.strip_location else tag(checked="checked")

    @renderer
    def location_strip(self, request: Any, tag: Tag) -> Tag:
        """The "remove the location" choice, checked while the setting is on."""
        return tag(checked="checked") if self.strip_location else tag

    @renderer
    def accounts(self, request: Any, tag: Tag) -> Iterator[Element]:
        for a in self.account_views:
            yield AccountRow(a, tag.clone(False))  # shallow, as a gallery card


class AccountRow(Element):
    """One row of the accounts table."""

    def __init__(self, view: AccountView, tag: Tag):
        if view.is_admin:
            question, button = f"Remove the administrator rights of {view.name}?", "Remove admin"
        else:
            question, button = f"Make {view.name} an administrator? It can then manage every account.", "Make admin"
        super().__init__(loader=TagLoader(tag.fillSlots(
            **_scalar_slots(view),
            reset_href="/account/reset?" + urlencode({"name": view.name}),
            admin_value="0" if view.is_admin else "1", admin_question=question, admin_button=button,
            quota_id=f"quota-{view.name}", images_id=f"images-{view.name}",
        )))
        self.view = view

    @renderer
    def when_other(self, request: Any, tag: Tag) -> Tag | str:
        return _shown_if(not self.view.is_self, tag)

    @renderer
    def when_self(self, request: Any, tag: Tag) -> Tag | str:
        return _shown_if(self.view.is_self, tag)


class ResetBody(Element):
    """An administrator's form setting a new password for another account."""

    loader = template("reset.xhtml")

    def __init__(self, csrf: str, name: str):
        super().__init__()
        self.csrf, self.name = csrf, name

    @renderer
    def form(self, request: Any, tag: Tag) -> Tag:
        return tag.fillSlots(csrf=self.csrf, name=self.name)
