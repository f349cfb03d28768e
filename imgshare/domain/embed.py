"""What a viewer page offers for sharing (SPEC section 9): the embed codes and the
Open Graph / Twitter card tags.  Pure functions over an image record and the
public URL; the page places the results, escaped, into its template."""

from __future__ import annotations

import html
import re

import attrs

from imgshare.domain import naming, output, records

#: Characters a Markdown alt text escapes with a backslash (CommonMark allows it
#: before any ASCII punctuation): brackets end the text, the rest would format it.
_MARKDOWN_SPECIAL = re.compile(r"([\\\[\]()<>*_`!])")


@attrs.frozen
class EmbedCode:
    """One ready-to-paste code: its label, a short id for the page, and the text."""

    label: str
    key: str
    code: str


def alt_text(image: records.Image) -> str:
    """The client's own file name when it is known, else the stored name."""
    return image.original_name or image.name


def markdown_text(text: str) -> str:
    """``text`` escaped for a Markdown alt text."""
    return _MARKDOWN_SPECIAL.sub(r"\\\1", text)


def xga_path(image: records.Image) -> str:
    """The XGA copy's path on this site (the viewer page shows it)."""
    return "/img/" + naming.storage_key(image.account, image.name, "xga")


def embed_codes(public_url: str, image: records.Image) -> list[EmbedCode]:
    """Direct link (the original), then BBCode, HTML and Markdown showing the XGA
    copy linked to the viewer page.  The alt text is escaped for each format."""
    urls = output.image_urls(public_url, image.account, image.name)
    page = output.viewer_url(public_url, image.account, image.name)
    xga = urls["xga"]
    alt = alt_text(image)
    markdown_alt = markdown_text(alt)
    return [
        EmbedCode("Direct link", "direct", urls["original"]),
        EmbedCode("BBCode", "bbcode", f"[url={page}][img]{xga}[/img][/url]"),
        EmbedCode("HTML", "html", f'<a href="{page}"><img src="{xga}" alt="{html.escape(alt, quote=True)}"></a>'),
        EmbedCode("Markdown", "markdown", f"[![{markdown_alt}]({xga})]({page})"),
    ]


def card_tags(public_url: str, image: records.Image, xga_size: tuple[int, int]) -> list[tuple[str, str, str]]:
    """The Open Graph and Twitter card ``<meta>`` tags as (attribute, key, content):
    ``og:image`` is the XGA copy, ``xga_size`` its width and height."""
    xga = output.image_urls(public_url, image.account, image.name)["xga"]
    return [
        ("property", "og:type", "website"),
        ("property", "og:site_name", "IMGSHARE"),
        ("property", "og:title", image.name),
        ("property", "og:url", output.viewer_url(public_url, image.account, image.name)),
        ("property", "og:image", xga),
        ("property", "og:image:type", "image/jpeg"),
        ("property", "og:image:width", str(xga_size[0])),
        ("property", "og:image:height", str(xga_size[1])),
        ("property", "og:image:alt", alt_text(image)),
        ("name", "twitter:card", "summary_large_image"),
        ("name", "twitter:title", image.name),
        ("name", "twitter:image", xga),
    ]
