"""The gateway's settings: environment variables with the prefix ``MODELOPS_``.

Every field below is one variable (``engine_url`` is ``MODELOPS_ENGINE_URL``). The
operator's pod builder sets ENGINE, ENGINE_URL, MODEL, REVISION and METADATA_URI;
the rest have defaults that suit a pod with one engine container beside the gateway.
"""

from __future__ import annotations

from ipaddress import IPv4Network, IPv6Network, ip_network
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

# hosted: an OpenAI-compatible API outside the pod (a provider's); ENGINE_URL is then its OpenAI
# base URL (https://api.openai.com/v1, .../v1beta/openai): requests go to <url>/chat/completions.
EngineKind = Literal["vllm", "ollama", "openai", "hosted"]


class GatewaySettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MODELOPS_", extra="ignore", frozen=True)

    # --- what is served -------------------------------------------------------
    engine: EngineKind = "vllm"
    engine_url: str = "http://127.0.0.1:8000"
    model: str = Field(min_length=1, description="the model name clients send as `model`")
    engine_model: str | None = Field(
        default=None, description="the name the engine knows the model by (default: MODEL), e.g. an Ollama tag")
    revision: str = "unknown"
    namespace: str = Field(default="", description="the pod's namespace (a label on every metric)")
    engine_api_key_file: Path | None = Field(
        default=None, description="file holding a bearer token sent to the engine (openai and hosted upstreams: "
                                  "a hosted API's key, mounted from a Secret; never logged)")

    # --- serving config from GCS ---------------------------------------------
    metadata_uri: str | None = Field(
        default=None,
        description="gs://bucket/path/best_model_metadata.json, or a prefix meaning the newest "
                    "{timestamp}_{commit}/ folder under it; file:///path also works")
    metadata_filename: str = "best_model_metadata.json"

    # --- the gateway's own server ----------------------------------------------
    host: str = "0.0.0.0"
    port: int = Field(default=8080, ge=1, le=65535)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    max_body_bytes: int = Field(default=4 * 1024 * 1024, ge=1024, description="larger requests get 413")

    # --- talking to the engine --------------------------------------------------
    connect_timeout: float = Field(default=5.0, gt=0)
    upstream_timeout: float = Field(
        default=300.0, gt=0,
        description="seconds of upstream silence allowed (before the response starts or between "
                    "chunks); before the first byte it becomes 504")
    retries: int = Field(default=2, ge=0, le=10, description="extra attempts, only before the first byte")
    retry_backoff: float = Field(default=0.2, ge=0, description="first backoff in seconds, doubled per attempt")
    max_connections: int = Field(default=1024, ge=1, description="upstream connection pool size")

    # --- readiness ---------------------------------------------------------------
    health_interval: float = Field(default=5.0, gt=0, description="engine probe period while ready")
    unready_interval: float = Field(default=1.0, gt=0, description="engine probe period while not ready")
    warmup: bool = True
    warmup_prompt: str = "Hello"

    # --- fallback upstream (local first, hosted fallback) ---------------------------
    fallback_url: str | None = None
    fallback_model: str | None = Field(default=None, description="model name sent to the fallback (default: MODEL)")
    fallback_api_key_file: Path | None = None

    # --- A/B tests (written by the operator; see split.py) ---------------------------
    split_file: Path | None = Field(
        default=None, description="JSON file with the A/B split this revision applies as the stable one "
                                  "(the operator mounts the ConfigMap <deployment>-split here); missing = no split")

    # --- shadow traffic: a canary's mirror step (written by the operator; see mirror.py) ----
    mirror_max_inflight: int = Field(default=64, ge=1, description="copies to the shadow in flight at once (and "
                                                                    "its connection pool); beyond: skipped, counted")
    mirror_max_inflight_bytes: int = Field(default=16 * 1024 * 1024, ge=1024,
                                           description="request bodies held by copies in flight; beyond: skipped")
    mirror_timeout: float = Field(default=60.0, gt=0, description="seconds a copy may take, its answer included")

    # --- user feedback (see responseid.py, feedback.py) -------------------------------
    feedback_key_file: Path | None = Field(
        default=None, description="file holding the key that signs response ids (a Secret shared by the revision's "
                                  "replicas); unset = a key per process, so feedback counts only on the replica "
                                  "that answered")

    # --- structured output (see structured.py) -----------------------------------------
    structured_output_max_bytes: int = Field(
        default=1 << 20, ge=1024, description="answer text kept to judge a JSON answer; longer ones count as "
                                             "too_large")

    # --- cost (see cost.py); unset = not priced: no cost metric ---------------------------
    price_per_hour: float | None = Field(
        default=None, ge=0, description="dollars per hour this pod costs (its GPUs' and CPU's share), accrued "
                                        "over time")
    price_input_per_mtok: float | None = Field(
        default=None, ge=0, description="dollars per million prompt tokens (a hosted API's price)")
    price_output_per_mtok: float | None = Field(
        default=None, ge=0, description="dollars per million output tokens (a hosted API's price)")

    # --- response cache (see cache.py, cache_store.py) -----------------------------------
    cache_enabled: bool | None = Field(
        default=None, description="answer repeated deterministic requests (temperature 0 or a seed, no tools) "
                                  "from a cache; default: on when CACHE_URL is set, else off")
    cache_url: str | None = Field(
        default=None, description="redis://host:6379/0 (or rediss://): a Redis shared by the revision's replicas; "
                                  "unset = in memory, per process")
    cache_password_file: Path | None = Field(default=None, description="file holding the Redis password")
    cache_max_bytes: int = Field(default=64 * 1024 * 1024, ge=64 * 1024,
                                 description="bytes the in-memory cache holds in all (least recently used go first)")
    cache_max_entry_bytes: int = Field(default=1 << 20, ge=1024, description="larger answers are not stored")
    cache_ttl_seconds: float = Field(default=3600.0, gt=0, description="how long an answer is served from the cache")
    cache_timeout: float = Field(default=0.1, gt=0, description="seconds a Redis call may take; beyond, the request "
                                                                "goes to the engine")

    # --- optional protection --------------------------------------------------------
    auth_token_file: Path | None = Field(
        default=None, description="when set, requests need `Authorization: Bearer <token in file>`")
    rate_limit_rps: float = Field(default=0.0, ge=0, description="per-client requests/second; 0 = off")
    rate_limit_burst: int = Field(default=20, ge=1)
    # NoDecode: a comma-separated list, like nginx's set_real_ip_from lines, rather than JSON.
    trusted_proxies: Annotated[tuple[IPv4Network | IPv6Network, ...], NoDecode] = Field(
        default=(), description="comma-separated CIDRs (or addresses) of the proxies in front of the gateway, e.g. "
                                "the ingress controller's pods; the rate limit believes X-Forwarded-For only "
                                "from these (see security.client_address). Empty = the TCP peer is the client")

    @field_validator("engine_url")
    @classmethod
    def _check_engine_url(cls, v: str) -> str:
        return _http_url(v)

    @field_validator("fallback_url")
    @classmethod
    def _check_fallback_url(cls, v: str | None) -> str | None:
        return _http_url(v) if v else None

    @field_validator("cache_url")
    @classmethod
    def _check_cache_url(cls, v: str | None) -> str | None:
        if v is None or not v.strip():
            return None
        if not v.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must be a redis://, rediss:// or unix:// URL")
        return v.strip()

    @model_validator(mode="after")
    def _check_cache_bounds(self) -> "GatewaySettings":
        if self.cache_on and not self.cache_url and self.cache_max_entry_bytes > self.cache_max_bytes:
            raise ValueError("cache_max_entry_bytes must not exceed cache_max_bytes")
        return self

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _parse_trusted_proxies(cls, v: Any) -> Any:
        if isinstance(v, str):
            v = [item for item in v.split(",") if item.strip()]
        if isinstance(v, (list, tuple)):
            # strict: "10.0.0.1/8" is refused, since whoever wrote it meant some other range.
            return tuple(ip_network(str(item).strip()) if isinstance(item, str) else item for item in v)
        return v

    @field_validator("metadata_uri")
    @classmethod
    def _check_metadata_uri(cls, v: str | None) -> str | None:
        if v is None or v.strip() == "":
            return None
        if not v.startswith(("gs://", "file://")):
            raise ValueError(f"must be a gs:// or file:// URI, got {v!r}")
        return v

    @property
    def cache_on(self) -> bool:
        """The response cache is on: MODELOPS_CACHE_ENABLED, else whether a Redis URL is set."""
        return self.cache_enabled if self.cache_enabled is not None else self.cache_url is not None

    @property
    def upstream_model(self) -> str:
        return self.engine_model or self.model

    @property
    def fallback_upstream_model(self) -> str:
        return self.fallback_model or self.model


def _http_url(v: str) -> str:
    if not v.startswith(("http://", "https://")):
        raise ValueError(f"must start with http:// or https://, got {v!r}")
    return v.rstrip("/")
