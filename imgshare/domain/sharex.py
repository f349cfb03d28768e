"""The ShareX custom uploader file (``.sxcu``) for one API token.

Current ShareX syntax (version 15 and later): ``{json:path}`` picks a value
out of the JSON answer; the error text comes from our ``error`` field.
"""

from __future__ import annotations

import json
import re
from urllib.parse import urlsplit

#: The ShareX version whose custom uploader syntax the file uses.
SHAREX_SYNTAX_VERSION = "15.0.0"


def uploader(public_url: str, token: str) -> dict[str, object]:
    """The custom uploader settings: multipart upload with the token in ``X-API-Key``."""
    base = public_url.rstrip("/")
    return {
        "Version": SHAREX_SYNTAX_VERSION,
        "Name": f"IMGSHARE ({urlsplit(base).netloc or base})",
        "DestinationType": "ImageUploader",
        "RequestMethod": "POST",
        "RequestURL": f"{base}/api/v1/img_upload.php",
        "Headers": {"X-API-Key": token},
        "Body": "MultipartFormData",
        "FileFormName": "file",
        "URL": "{json:urls.original}",
        "ThumbnailURL": "{json:urls.qvga}",
        "ErrorMessage": "{json:error}",
    }


def uploader_file(public_url: str, token: str) -> bytes:
    """The ``.sxcu`` file's bytes (indented JSON, as ShareX exports it)."""
    return (json.dumps(uploader(public_url, token), indent=2) + "\n").encode("utf-8")


def file_name(public_url: str) -> str:
    """A download name such as ``img.example.sxcu`` (safe in a Content-Disposition header)."""
    host = urlsplit(public_url).netloc or "imgshare"
    return re.sub(r"[^A-Za-z0-9._-]", "_", host) + ".sxcu"
