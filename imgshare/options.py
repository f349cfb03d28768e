"""Backend and server options shared by ``twistd imgshare`` and the ``imgshare`` command.

Every option can also come from the environment as ``IMGSHARE_<OPTION>``
(``--data-dir`` -> ``IMGSHARE_DATA_DIR``); the command line wins.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from typing import Any

from imgshare.config import (
    DEFAULT_DATA_DIR,
    DEFAULT_LISTEN,
    MAX_FILES,
    Config,
    RateLimit,
    guess_public_url,
)
from imgshare.domain.lifetime import parse_size, parse_tiers
from imgshare.domain.quota import parse_quota_bytes

# (option, help); every one is a string on the command line.
SERVER_OPTIONS = [
    ("data-dir", f"Folder for the embedded database, storage and spool [default: {DEFAULT_DATA_DIR}]"),
    ("db", "Database URL: sqlite:///PATH or postgresql://... [default: sqlite in the data folder]"),
    ("storage", "Storage URL: file:///PATH or s3://BUCKET?endpoint_url=...&region=... [default: files in the data folder]"),
    ("public-url", "Base of every URL handed out [default: from the first --listen]"),
    ("resize-threads", "Threads for image work [default: CPU count]"),
    ("max-size", "Largest upload in bytes (suffixes KiB, MiB) [default: 32MiB]"),
    ("max-pixels", "Largest width x height [default: 100000000]"),
    ("max-files", f"Files one POST /api/v1/upload may carry [default: {MAX_FILES}]"),
    ("contact", "Contact named in the User-Agent of img_gather.php"),
    ("registration", "open or closed [default: closed]"),
    ("tiers", "Lifetime tiers by size [default: 2MiB:permanent,8MiB:90d,32MiB:7d]"),
    ("quota", "Storage quota of each new account, e.g. 10GiB (suffixes KB, MB, GB, KiB, MiB, GiB), "
              "or none; imgshare user quota changes one account's [default: none]"),
    ("rate-limit-ip", "API requests per client address, COUNT/SECONDS [default: 600/60]"),
    ("rate-limit-token", "API requests per token, COUNT/SECONDS [default: 300/60]"),
    ("head-timeout", "Seconds a client has for a whole request head, 0 for no limit [default: 10]"),
    ("min-body-rate", "Slowest request body, BYTES/SECONDS: at least BYTES in every such period, "
                      "0 for no limit [default: 16384/30]"),
    ("max-connections-per-address", "Concurrent connections per client address (an IPv6 /64), 0 for no cap; "
                                    "raise it behind a proxy that does not send the PROXY protocol [default: 64]"),
    ("cache-dir", "Folder for a local cache of hot objects of S3 storage (ignored with local files) [default: none]"),
    ("cache-size", "Largest total size of the cache (suffixes KiB, MiB, GiB) [default: 1GiB]"),
    ("access-log", "File for the access lines, written in batches (at most 1 s late); reopened when "
                   "it is rotated away [default: none, the lines go to the twistd log]"),
    ("metrics", "Prometheus metrics: on (GET /metrics on every --listen), off, or an endpoint "
                "description such as tcp:9100:interface=127.0.0.1 (served there only) [default: on]"),
]
BACKEND_OPTIONS = ("data-dir", "db", "storage")



def env_name(option: str) -> str:
    return "IMGSHARE_" + option.upper().replace("-", "_")


def resolve(given: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Each option's value: the command line's, else the environment's; unset ones omitted."""
    environ = os.environ if environ is None else environ
    values = {}
    for option, _ in SERVER_OPTIONS + [("listen", "")]:
        key = option.replace("-", "_")
        value = given.get(option)
        if value in (None, [], ()):
            value = environ.get(env_name(option))
            if value is not None and option == "listen":
                value = value.split()
        if value not in (None, [], (), ""):
            values[key] = value
    return values


def _float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise ValueError(f"must be a number, not {text!r}")
    return value


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"must be a whole number, not {text!r}") from None


def origins(given: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Where each resolved option came from, for messages: ``--max-size`` or
    ``IMGSHARE_MAX_SIZE``."""
    environ = os.environ if environ is None else environ
    found = {}
    for option, _ in SERVER_OPTIONS + [("listen", "")]:
        value = given.get(option)
        found[option.replace("-", "_")] = f"--{option}" if value not in (None, [], ()) else env_name(option)
    return found


def _min_body_rate(text: str) -> RateLimit | None:
    rate = text.strip()
    try:
        return None if rate == "0" else RateLimit.parse(rate)
    except ValueError:
        raise ValueError(f"must look like 16384/30 (bytes/seconds) or 0, not {rate!r}") from None


#: How each option's text becomes a Config field: (field, parser).
_PARSERS: dict[str, tuple[str, Any]] = {
    "resize_threads": ("resize_threads", _int),
    "max_size": ("max_size", parse_size),
    "max_pixels": ("max_pixels", _int),
    "max_files": ("max_files", _int),
    "tiers": ("tiers", parse_tiers),
    "quota": ("default_quota", parse_quota_bytes),
    "rate_limit_ip": ("rate_ip", RateLimit.parse),
    "rate_limit_token": ("rate_token", RateLimit.parse),
    "head_timeout": ("head_timeout", _float),
    "min_body_rate": ("min_body_rate", _min_body_rate),
    "max_connections_per_address": ("max_connections_per_address", _int),
    "cache_size": ("cache_size", parse_size),
}


def build_config(values: Mapping[str, Any], where: Mapping[str, str] | None = None) -> Config:
    """A validated Config from resolved option values.  A bad value is a ValueError that
    names the option (and, by ``where`` from ``origins``, the variable it came from)."""
    where = where or {}
    kwargs: dict[str, Any] = {}
    for key in ("data_dir", "db", "storage", "public_url", "contact", "registration", "metrics", "cache_dir", "access_log"):
        if key in values:
            kwargs[key] = values[key]
    kwargs["listen"] = tuple(values["listen"]) if "listen" in values else (DEFAULT_LISTEN,)
    if "cache_size" in values and "cache_dir" not in values:
        raise ValueError(_named("cache_size", where, "needs --cache-dir (the cache is off without a folder)"))
    if "public_url" not in values:
        kwargs["public_url_warning"] = guess_public_url(kwargs["listen"][0])[1]
    for key, (field, parse) in _PARSERS.items():
        if key in values:
            try:
                kwargs[field] = parse(values[key])
            except ValueError as e:
                raise ValueError(_named(key, where, str(e))) from None
    return Config(**kwargs)


def check_listen(reactor: Any, descriptions: tuple[str, ...], where: str = "--listen") -> None:
    """ValueError naming the first ``--listen`` description Twisted cannot make an endpoint of
    (unknown kind, a bad port, a missing certificate…); nothing is opened."""
    from twisted.internet.endpoints import serverFromString

    for description in descriptions:
        try:
            endpoint = serverFromString(reactor, description)
        except Exception as e:  # Twisted's parsers raise ValueError, TypeError, OSError…
            raise ValueError(f"{where} {description!r}: {_reason(e)}") from None
        port = getattr(endpoint, "_port", None)
        if isinstance(port, int) and not 0 <= port <= 65535:
            raise ValueError(f"{where} {description!r}: port {port} is not between 0 and 65535")


def _reason(error: Exception) -> str:
    if isinstance(error, OSError) and error.filename:
        return f"{error.strerror}: {error.filename}"
    if isinstance(error, TypeError):
        return f"an option it does not take ({error})"
    if "invalid literal for int()" in str(error):
        return "a port must be a number"
    return str(error)


def _named(key: str, where: Mapping[str, str], message: str) -> str:
    """``--max-size: invalid size: 'foo'``, saying so when the value came from the environment."""
    flag = "--" + key.replace("_", "-")
    source = where.get(key, flag)
    return f"{flag}: {message}" + (f" (the value comes from {source})" if source != flag else "")
