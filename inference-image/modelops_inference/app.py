"""``create_app(settings)``: the gateway's ASGI app; its lifespan owns every long-lived object.

At startup: load the serving config (when ``MODELOPS_METADATA_URI`` is set; failing
to load it stops the startup with the reason), open the upstream HTTP session, start
the engine monitor (probe, warm-up). At shutdown: stop the monitor, close the session.
"""

from __future__ import annotations

import logging
import os
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Callable

import aiohttp
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse

from . import __version__
from .cache_store import ResponseCache
from .cost import CostMeter
from .engines import make_engine
from .health import EngineMonitor
from .metadata import ServingConfigHolder, default_gcs_client, make_source
from .metrics import GatewayMetrics
from .protocol import error_body
from .proxy import Upstream
from .responseid import ResponseIds
from .routes import feedback, openai, ops, predict
from .routes.fast import GatewayApp
from .security import RateLimiter, TokenFile
from .service import GatewayService
from .settings import GatewaySettings
from .split import SplitFile

log = logging.getLogger("modelops_inference")


class StartupError(RuntimeError):
    """The gateway cannot start; the message says why and what to fix."""


def _bearer(path: Any) -> dict[str, str]:
    if path is None:
        return {}
    token = path.read_text().strip()
    return {"Authorization": f"Bearer {token}"} if token else {}


def _response_ids(settings: GatewaySettings) -> ResponseIds:
    if settings.feedback_key_file is None:
        log.warning("no MODELOPS_FEEDBACK_KEY_FILE: response ids are signed with a key of this process only, so "
                    "feedback is counted only when it reaches the replica that answered")
        return ResponseIds(os.urandom(32), settings.revision)
    try:
        key = settings.feedback_key_file.read_bytes().strip()
        return ResponseIds(key, settings.revision)
    except (OSError, ValueError) as exc:
        raise StartupError(f"cannot read the response id key: {exc} "
                           f"(MODELOPS_FEEDBACK_KEY_FILE={settings.feedback_key_file})") from exc


def _response_cache(settings: GatewaySettings, metrics: GatewayMetrics) -> ResponseCache | None:
    if not settings.cache_on:
        return None
    try:
        return ResponseCache(settings, metrics)
    except (OSError, ImportError, ValueError) as exc:
        raise StartupError(f"cannot set up the response cache: {exc} (MODELOPS_CACHE_URL, "
                           f"MODELOPS_CACHE_PASSWORD_FILE)") from exc


def create_app(settings: GatewaySettings, *, gcs_client_factory: Callable[[], Any] = default_gcs_client) -> Starlette:
    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        ids = _response_ids(settings)
        cost = CostMeter(settings.price_per_hour, settings.price_input_per_mtok, settings.price_output_per_mtok)
        metrics = GatewayMetrics(settings.model, settings.revision, settings.engine, settings.namespace, cost=cost)
        holder = ServingConfigHolder(
            make_source(settings.metadata_uri, settings.metadata_filename, gcs_client_factory),
            on_loaded=lambda c: metrics.metadata_loaded(c.source_uri, c.generation, c.version),
            on_failed=metrics.metadata_failed)
        if holder.source is not None:
            first = await holder.reload()
            if not first.ok:
                raise StartupError(f"cannot start without a serving config: {first.error} "
                                   f"(MODELOPS_METADATA_URI={settings.metadata_uri})")
        connector = aiohttp.TCPConnector(limit=settings.max_connections, limit_per_host=settings.max_connections,
                                         keepalive_timeout=30, enable_cleanup_closed=True)
        # No cookie jar: one session serves every client, so a cookie one answer sets must never
        # ride along on another client's request.
        session = aiohttp.ClientSession(connector=connector, auto_decompress=False,
                                        cookie_jar=aiohttp.DummyCookieJar(),
                                        timeout=aiohttp.ClientTimeout(total=None))
        engine_headers = _bearer(settings.engine_api_key_file)
        engine = make_engine(settings.engine, settings.engine_url, settings.upstream_model, headers=engine_headers,
                             timeout=max(settings.connect_timeout, 5.0), warmup_prompt=settings.warmup_prompt)
        monitor = EngineMonitor(engine, session, interval=settings.health_interval,
                                unready_interval=settings.unready_interval, warmup=settings.warmup,
                                on_change=metrics.set_engine_ready)
        fallback = None
        if settings.fallback_url:
            fallback = Upstream("fallback", settings.fallback_url, settings.fallback_upstream_model,
                                _bearer(settings.fallback_api_key_file))
        app.state.gateway = GatewayService(
            settings=settings, session=session, metrics=metrics, config=holder, monitor=monitor,
            engine=Upstream("engine", settings.engine_url, settings.upstream_model, engine_headers,
                            api_base=settings.engine == "hosted"),
            fallback=fallback,
            token=TokenFile(settings.auth_token_file) if settings.auth_token_file else None,
            limiter=RateLimiter(settings.rate_limit_rps, settings.rate_limit_burst) if settings.rate_limit_rps else None,
            split=SplitFile(settings.split_file, settings.revision) if settings.split_file else None,
            ids=ids,
            cache=_response_cache(settings, metrics),
        )
        monitor.start()
        log.info("gateway %s serving %r (revision %s) in front of %s at %s%s", __version__, settings.model,
                 settings.revision, settings.engine, settings.engine_url,
                 f", fallback {settings.fallback_url}" if fallback else "")
        try:
            yield
        finally:
            await monitor.stop()
            await app.state.gateway.mirror.aclose()
            if app.state.gateway.cache is not None:
                await app.state.gateway.cache.aclose()
            await session.close()

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, HTTPException)
        message = {404: f"no route {request.method} {request.url.path}",
                   405: f"method {request.method} not allowed on {request.url.path}"}.get(exc.status_code,
                                                                                        str(exc.detail))
        type_ = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        return JSONResponse(error_body(message, type_=type_), status_code=exc.status_code, headers=exc.headers)

    # Plain Starlette routes: no per-request dependency resolution on the hot path; the
    # inference routes are also dispatched without the middleware stack (routes/fast.py).
    app = GatewayApp(routes=[*openai.routes, *predict.routes, *feedback.routes, *ops.routes], lifespan=lifespan,
                     exception_handlers={HTTPException: http_error}, direct=[*openai.routes, *predict.routes])
    return app
