"""The ShareX custom uploader files (``.sxcu``) for one API token (PEERS section 4).

Three flavours, one per API a ShareX user may point at:

- ``native``: ``/api/v1/img_upload.php``, the token in ``X-API-Key``;
- ``v1``: ``/api/v1/upload`` (the Bearer / X-API-Key JSON API), the token as a Bearer;
- ``chevereto``: ``/api/1/upload`` (Chevereto API v1), the token in ``X-API-Key``,
  the file as ``source``.

Each file says ``"Version": "17.0.0"``: current ShareX refuses a file without a
Version or older than 12.3.1, and turns one up to 13.7.1 into the old ``$json:…$``
syntax.  Values are picked out of the JSON answer with ``{json:path}``.  The token is
in a header, never in ``Arguments`` (a body field would end up in ShareX's history).
"""

from __future__ import annotations

import json
import re
from urllib.parse import urlsplit

#: The ShareX version whose custom uploader syntax the files use.
SHAREX_SYNTAX_VERSION = "17.0.0"

#: The flavours, in the order the tokens page offers them; the first is the default.
FLAVOURS = ("native", "v1", "chevereto")

#: Per flavour: the Name's label, the path, how the token is sent, the file's form
#: field and where ShareX finds the URL, thumbnail, deletion link and error.
_SHAPES: dict[str, dict[str, str]] = {
    "native": {
        "label": "", "path": "/api/v1/img_upload.php", "header": "X-API-Key", "scheme": "",
        "field": "file", "url": "{json:urls.original}", "thumb": "{json:urls.qvga}",
        "delete": "{json:delete_url}", "error": "{json:error}",
    },
    "v1": {
        "label": "v1 ", "path": "/api/v1/upload", "header": "Authorization", "scheme": "Bearer ",
        "field": "file", "url": "{json:url}", "thumb": "{json:thumbnail}",
        "delete": "{json:delete_url}", "error": "{json:error}",
    },
    "chevereto": {
        "label": "Chevereto ", "path": "/api/1/upload", "header": "X-API-Key", "scheme": "",
        "field": "source", "url": "{json:image.url}", "thumb": "{json:image.thumb.url}",
        "delete": "{json:image.delete_url}", "error": "{json:error.message}",
    },
}


def _host(public_url: str) -> str:
    return urlsplit(public_url).netloc


def uploader(public_url: str, token: str, flavour: str = "native") -> dict[str, object]:
    """The custom uploader settings of ``flavour`` (KeyError for an unknown one):
    a multipart upload with the token in a header."""
    shape = _SHAPES[flavour]
    base = public_url.rstrip("/")
    return {
        "Version": SHAREX_SYNTAX_VERSION,
        "Name": f"IMGSHARE {shape['label']}({_host(base) or base})",
        "DestinationType": "ImageUploader",
        "RequestMethod": "POST",
        "RequestURL": base + shape["path"],
        "Headers": {shape["header"]: shape["scheme"] + token},
        "Body": "MultipartFormData",
        "FileFormName": shape["field"],
        "URL": shape["url"],
        "ThumbnailURL": shape["thumb"],
        "DeletionURL": shape["delete"],
        "ErrorMessage": shape["error"],
    }


def uploader_file(public_url: str, token: str, flavour: str = "native") -> bytes:
    """The ``.sxcu`` file's bytes (indented JSON, as ShareX exports it)."""
    return (json.dumps(uploader(public_url, token, flavour), indent=2) + "\n").encode("utf-8")


def file_name(public_url: str, flavour: str = "native") -> str:
    """A download name such as ``img.example.sxcu`` (native), ``img.example-v1.sxcu`` or
    ``img.example-chevereto.sxcu`` (safe in a Content-Disposition header)."""
    if flavour not in _SHAPES:
        raise KeyError(flavour)
    host = re.sub(r"[^A-Za-z0-9._-]", "_", _host(public_url) or "imgshare")
    return host + ("" if flavour == "native" else f"-{flavour}") + ".sxcu"
