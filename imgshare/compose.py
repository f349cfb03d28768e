"""The composition root: every component of one IMGSHARE process, built once.

``build`` is the only place that constructs services and connects them; the
running server (``imgshare.service``) and the test fixture
(``imgshare.testing``) both call it, with their own backends and workers.
Constructors elsewhere receive their collaborators and build none.
"""

from __future__ import annotations

import functools
from typing import Any

import attrs

from imgshare.accounts import Accounts
from imgshare.config import Config
from imgshare.expiry import ExpiryService
from imgshare.gather import ErrorCache, Gatherer
from imgshare.health import Readiness, WatchedDatabase, WatchedStorage
from imgshare.jobs import Derivations
from imgshare.library import ImageLibrary
from imgshare.metrics import Metrics
from imgshare.outage import Outage
from imgshare.presign import PresignedUploads
from imgshare.ratelimit import (
    LOGIN_PER_ACCOUNT,
    LOGIN_PER_ACCOUNT_ADDRESS,
    LOGIN_PER_ADDRESS,
    LoginThrottle,
    MemoryLimits,
    RateLimiter,
)
from imgshare.sessions import Sessions
from imgshare.sharedlimits import (
    DatabaseErrorCache,
    DatabaseLimits,
    FallbackErrorCache,
    FallbackLimits,
)
from imgshare.web.accesslog import AccessLog
from imgshare.web.api import Api
from imgshare.web.chevereto import PREFIXES as CHEVERETO_PREFIXES
from imgshare.web.chevereto import Chevereto
from imgshare.web.files import Files
from imgshare.web.health import HealthRoutes
from imgshare.web.jsonapi import JsonApi
from imgshare.web.jsonapi import body_limit as jsonapi_body_limit
from imgshare.web.pages import Pages
from imgshare.web.pages.account import AccountPages
from imgshare.web.pages.auth import AuthPages
from imgshare.web.pages.delete import DeleteLinks
from imgshare.web.pages.images import ImagePages
from imgshare.web.pages.static import StaticFiles
from imgshare.web.pages.tokens import TokenPages
from imgshare.web.pages.viewer import ViewerPages
from imgshare.web.request import ImgshareSite
from imgshare.web.root import Root
from imgshare.web.sessions import SessionCookies

#: ``build(gatherer=BUILD)``: make the production gatherer from the config.
BUILD: Any = object()


@attrs.frozen
class Components:
    """The object graph of one process (nothing started yet)."""

    library: ImageLibrary
    accounts: Accounts
    sessions: Sessions
    cookies: SessionCookies
    throttle: LoginThrottle
    pages: Pages
    api: Api
    chevereto: Chevereto
    jsonapi: JsonApi
    presigned: PresignedUploads
    files: Files
    root: Root
    resource: Any  # IResource: what the site serves
    site: ImgshareSite
    derivations: Derivations
    expiry: ExpiryService
    #: The backends as every component above uses them (watched: outages, error counts).
    database: WatchedDatabase
    storage: WatchedStorage
    metrics: Metrics
    readiness: Readiness
    health: HealthRoutes


def body_limits(config: Config, presigned: Any) -> dict[bytes, Any]:
    """The path prefixes whose bodies may be larger than one file (base64, several
    files) or must be smaller (a presigned PUT), and their limits."""
    limits: dict[bytes, Any] = {prefix: config.max_encoded_body for prefix in CHEVERETO_PREFIXES}
    limits[b"/api/v1/upload"] = functools.partial(jsonapi_body_limit, config, presigned)
    return limits


def build(
    config: Config, reactor: Any, database: Any, storage: Any, io: Any, image_runner: Any, *,
    gatherer: Gatherer | None = BUILD,
) -> Components:
    """Build every component over the given backends.

    ``reactor`` is also the clock (a ``task.Clock`` in tests); ``io`` runs file
    and password work, ``image_runner`` the derivations.  ``gatherer`` fetches
    for img_gather.php: by default one over ``reactor``; None answers 501 (a
    test without network).

    On a database several processes share (``database.shared``: PostgreSQL) the
    rate limits, the login throttle and the gatherer's error cache are kept in it,
    falling back to this process's memory during an outage; elsewhere in memory."""
    limits: Any = MemoryLimits(reactor)
    error_cache: Any = ErrorCache(reactor)
    if getattr(database, "shared", False):
        limits = FallbackLimits(DatabaseLimits(database, reactor), limits)
        error_cache = FallbackErrorCache(DatabaseErrorCache(database, reactor, error_cache.lifetime), error_cache)
    if gatherer is BUILD:
        gatherer = Gatherer(reactor, config, error_cache=error_cache)
    metrics = Metrics()
    database = WatchedDatabase(
        database, getattr(database, "outage", None) or Outage("the database", reactor), metrics.database_errors)
    storage = WatchedStorage(
        storage, getattr(storage, "outage", None) or Outage("storage", reactor), metrics.storage_errors)
    readiness = Readiness(database, storage, reactor)
    health = HealthRoutes(readiness, metrics, database, serve_metrics=config.metrics == "on")
    library = ImageLibrary(config, database, storage, io, reactor, metrics=metrics)
    accounts = Accounts(database, io, reactor, default_quota=config.default_quota)
    sessions = Sessions(database, reactor)
    cookies = SessionCookies(sessions, config.public_url)
    throttle = LoginThrottle(LOGIN_PER_ADDRESS, LOGIN_PER_ACCOUNT_ADDRESS, LOGIN_PER_ACCOUNT, limits)
    shared = (library, io, accounts, cookies, throttle)
    pages = Pages(
        auth=AuthPages(*shared), images=ImagePages(*shared), tokens=TokenPages(*shared),
        account=AccountPages(*shared), static=StaticFiles(*shared), viewer=ViewerPages(*shared),
        delete=DeleteLinks(*shared, limiter=RateLimiter(config.rate_ip, limits, "delete", "client address")),
    )
    # One pair of buckets for every API family: a client's requests count once.
    ip_limiter = RateLimiter(config.rate_ip, limits, "api", "client address")
    token_limiter = RateLimiter(config.rate_token, limits, "api", "token")
    api = Api(library, io, ip_limiter, token_limiter, gatherer)
    chevereto = Chevereto(library, io, ip_limiter, token_limiter, gatherer)
    presigned = PresignedUploads(library, database, storage, io, reactor)
    jsonapi = JsonApi(library, io, ip_limiter, token_limiter, presigned)
    files = Files(library, storage, viewer=cookies.account_of)
    root = Root(api, files, pages, chevereto, jsonapi, health)
    resource = root.resource()
    site = ImgshareSite(
        resource, max_body=config.max_body, reactor=reactor,
        head_timeout=config.head_timeout, min_body_rate=config.min_body_rate,
        max_connections_per_address=config.max_connections_per_address,
        body_limits=body_limits(config, presigned), metrics=metrics,
        access_log=AccessLog(config.access_log, reactor) if config.access_log else None,
    )
    derivations = Derivations(library, database, image_runner, config.resize_threads, metrics=metrics)
    library.on_committed = derivations.wake
    expiry = ExpiryService(database, library, reactor, presigned=presigned)
    return Components(
        library=library, accounts=accounts, sessions=sessions, cookies=cookies, throttle=throttle,
        pages=pages, api=api, chevereto=chevereto, jsonapi=jsonapi, presigned=presigned, files=files, root=root,
        resource=resource, site=site, derivations=derivations, expiry=expiry, database=database, storage=storage,
        metrics=metrics, readiness=readiness, health=health,
    )
