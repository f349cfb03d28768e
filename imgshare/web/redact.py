"""What the logs may show of a request target: no secret, in the query or in the path.

Query values are all replaced by ``*`` (a query may carry a token, a key, a setup
code or a CSRF token).  Two kinds of path carry a secret segment, replaced by
``***`` with everything after it: the delete links ``/delete/<account>/<file>/<secret>``
and the presigned uploads ``/api/v1/upload/put/<opaque>``.  Segments are compared
percent-decoded and in any case, so a spelling the router would not serve is
redacted all the same.
"""

from __future__ import annotations

from urllib.parse import unquote_to_bytes

REDACTED = b"***"

#: (the leading segments, how many segments follow them before the secret).
_SECRET_PATHS = (
    ((b"delete",), 2),
    ((b"api", b"v1", b"upload", b"put"), 0),
)


def redact_query(uri: bytes) -> bytes:
    """``uri`` with every query value replaced by ``*`` (a query may carry a token or a code)."""
    path, question, query = uri.partition(b"?")
    if not question:
        return uri
    names = (part.split(b"=", 1)[0] for part in query.split(b"&"))
    return path + b"?" + b"&".join(name + b"=*" for name in names)


def redact_path(path: bytes) -> bytes:
    """``path`` (no query) with a delete link's or a presigned upload's secret segment,
    and whatever follows it, replaced by ``***``."""
    lowered = path.lower()
    if b"%" not in path and b"delete" not in lowered and b"put" not in lowered:
        return path  # most paths (every /img/ one): no segment to look at
    segments = path.split(b"/")
    kept = [(i, unquote_to_bytes(s).lower()) for i, s in enumerate(segments) if s]
    for leading, skip in _SECRET_PATHS:
        n = len(leading)
        if len(kept) > n + skip and tuple(s for _, s in kept[:n]) == leading:
            secret_at = kept[n + skip][0]
            return b"/".join(segments[:secret_at] + [REDACTED])
    return path


def redact_uri(uri: bytes) -> bytes:
    """A request target fit for a log: its secret path segment and query values redacted."""
    path, question, query = uri.partition(b"?")
    return redact_query(redact_path(path) + question + query)


def redact_url(url: bytes) -> bytes:
    """An absolute URL (a Referer) fit for a log: the same redaction on its path and query."""
    scheme, sep, rest = url.partition(b"://")
    if not sep:
        return redact_uri(url)
    host, slash, target = rest.partition(b"/")
    if not slash:
        host, question, query = rest.partition(b"?")
        return scheme + sep + redact_query(host + question + query)
    return scheme + sep + host + redact_uri(b"/" + target)
