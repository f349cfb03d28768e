"""Backend and server options shared by ``twistd imgshare`` and the ``imgshare`` command.

Every option can also come from the environment as ``IMGSHARE_<OPTION>``
(``--data-dir`` -> ``IMGSHARE_DATA_DIR``); the command line wins.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from typing import Any

from imgshare.config import DEFAULT_DATA_DIR, DEFAULT_LISTEN, MAX_FILES, Config, RateLimit
from imgshare.domain.lifetime import parse_size, parse_tiers

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
    ("rate-limit-ip", "API requests per client address, COUNT/SECONDS [default: 600/60]"),
    ("rate-limit-token", "API requests per token, COUNT/SECONDS [default: 300/60]"),
    ("head-timeout", "Seconds a client has for a whole request head, 0 for no limit [default: 10]"),
    ("min-body-rate", "Slowest request body, BYTES/SECONDS: at least BYTES in every such period, "
                      "0 for no limit [default: 16384/30]"),
    ("max-connections-per-address", "Concurrent connections per client address (an IPv6 /64), 0 for no cap; "
                                    "raise it behind a proxy that does not send the PROXY protocol [default: 64]"),
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


def build_config(values: Mapping[str, Any]) -> Config:
    """A validated Config from resolved option values (ValueError explains a bad one)."""
    kwargs: dict[str, Any] = {}
    for key in ("data_dir", "db", "storage", "public_url", "contact", "registration", "metrics"):
        if key in values:
            kwargs[key] = values[key]
    if "listen" in values:
        kwargs["listen"] = tuple(values["listen"])
    else:
        kwargs["listen"] = (DEFAULT_LISTEN,)
    if "resize_threads" in values:
        kwargs["resize_threads"] = _int("--resize-threads", values["resize_threads"])
    if "max_size" in values:
        kwargs["max_size"] = parse_size(values["max_size"])
    if "max_pixels" in values:
        kwargs["max_pixels"] = _int("--max-pixels", values["max_pixels"])
    if "max_files" in values:
        kwargs["max_files"] = _int("--max-files", values["max_files"])
    if "tiers" in values:
        kwargs["tiers"] = parse_tiers(values["tiers"])
    if "rate_limit_ip" in values:
        kwargs["rate_ip"] = RateLimit.parse(values["rate_limit_ip"])
    if "rate_limit_token" in values:
        kwargs["rate_token"] = RateLimit.parse(values["rate_limit_token"])
    if "head_timeout" in values:
        kwargs["head_timeout"] = _float("--head-timeout", values["head_timeout"])
    if "min_body_rate" in values:
        rate = values["min_body_rate"].strip()
        try:
            kwargs["min_body_rate"] = None if rate == "0" else RateLimit.parse(rate)
        except ValueError:
            raise ValueError(f"--min-body-rate must look like 16384/30 (bytes/seconds) or 0, not {rate!r}") from None
    if "max_connections_per_address" in values:
        kwargs["max_connections_per_address"] = _int("--max-connections-per-address",
                                                     values["max_connections_per_address"])
    return Config(**kwargs)


def _float(name: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a number, not {text!r}")
    return value


def _int(name: str, text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"{name} must be a whole number, not {text!r}") from None
