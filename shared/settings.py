"""Configuration from the environment (pydantic-settings); names as in the spec where it has them."""

from __future__ import annotations

import socket
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from shared.incident_settings import IncidentSettings, _env

DEFAULT_SQLITE_PATH = Path("var") / "autofix-ml.db"


class Settings(IncidentSettings):
    """Every setting, read once per process; `Settings(database_url=...)` in tests."""

    model_config = SettingsConfigDict(populate_by_name=True, extra="ignore")

    database_url: str = Field(
        default=f"sqlite+aiosqlite:///{DEFAULT_SQLITE_PATH}",
        validation_alias=_env("DATABASE_URL"),
        description="SQLAlchemy async URL: postgresql+asyncpg://... or sqlite+aiosqlite:///...",
    )
    ml_enabled: bool = Field(default=True, validation_alias=_env("ML_ENABLED"))
    collection_interval: float = Field(
        default=60.0, gt=0, validation_alias=_env("ML_COLLECTION_INTERVAL")
    )
    retention_days: float = Field(
        default=90.0, gt=0, validation_alias=_env("ML_DATA_RETENTION_DAYS")
    )
    retention_check_seconds: float = Field(
        default=3600.0, gt=0, validation_alias=_env("ML_RETENTION_CHECK_SECONDS")
    )
    buffer_size: int = Field(default=10_000, ge=1, validation_alias=_env("ML_BUFFER_SIZE"))
    write_queue_size: int = Field(
        default=100_000,
        ge=1,
        validation_alias=_env("ML_WRITE_QUEUE_SIZE"),
        description="Scores of answered predictions kept while the database is away; beyond "
        "it the oldest are dropped (counted in health and /metrics).",
    )

    # Where the collector reads application metrics (Prometheus text format); empty: the gateway's.
    scrape_enabled: bool = Field(
        default=True,
        validation_alias=_env("ML_SCRAPE_ENABLED"),
        description="Whether this collector reads application metrics at all; false: system "
        "metrics only (in Kubernetes, the nodes' collectors: the gateway pods' own sidecar "
        "collectors scrape them, one per pod).",
    )
    scrape_url: str = Field(default="", validation_alias=_env("ML_SCRAPE_URL"))
    scrape_active_requests_metric: str = Field(
        default="autofix_http_requests_in_progress",
        validation_alias=_env("ML_SCRAPE_ACTIVE_REQUESTS_METRIC"),
    )
    scrape_errors_metric: str = Field(
        default="autofix_http_request_errors_total",
        validation_alias=_env("ML_SCRAPE_ERRORS_METRIC"),
    )
    scrape_latency_metric: str = Field(
        default="autofix_http_request_duration_seconds",
        validation_alias=_env("ML_SCRAPE_LATENCY_METRIC"),
    )
    scrape_labels: dict[str, str] = Field(
        default_factory=lambda: {"traffic": "serving"},
        validation_alias=_env("ML_SCRAPE_LABELS"),
        description='Only scraped series with these label values count, JSON: {"traffic": '
        '"serving"} leaves out the gateway\'s own admin routes; a series without the label counts.',
    )
    scrape_timeout: float = Field(default=2.0, gt=0, validation_alias=_env("ML_SCRAPE_TIMEOUT"))

    hostname: str = Field(default_factory=socket.gethostname, validation_alias=_env("AUTOFIX_HOST"))
    bind_host: str = Field(default="127.0.0.1", validation_alias=_env("AUTOFIX_BIND_HOST"))
    api_port: int = Field(default=5000, validation_alias=_env("AUTOFIX_API_PORT"))
    collector_port: int = Field(default=8001, validation_alias=_env("AUTOFIX_COLLECTOR_PORT"))
    trainer_port: int = Field(default=8002, validation_alias=_env("AUTOFIX_TRAINER_PORT"))
    forecaster_port: int = Field(default=8003, validation_alias=_env("AUTOFIX_FORECASTER_PORT"))
    collector_url: str = Field(default="", validation_alias=_env("COLLECTOR_URL"))
    trainer_url: str = Field(default="", validation_alias=_env("TRAINER_URL"))
    forecaster_url: str = Field(default="", validation_alias=_env("FORECASTER_URL"))

    http_timeout: float = Field(
        default=10.0,
        gt=0,
        validation_alias=_env("AUTOFIX_HTTP_TIMEOUT"),
        description="Seconds the gateway waits on a service before answering 503.",
    )
    http_connect_timeout: float = Field(
        default=1.0, gt=0, validation_alias=_env("AUTOFIX_HTTP_CONNECT_TIMEOUT")
    )
    gateway_transport: Literal["aiohttp", "httpx"] = Field(
        default="aiohttp",
        validation_alias=_env("AUTOFIX_GATEWAY_TRANSPORT"),
        description="Transport under the gateway's httpx clients (see bench/RESULTS.md).",
    )
    health_cache_seconds: float = Field(
        default=1.0,
        ge=0,
        validation_alias=_env("AUTOFIX_HEALTH_CACHE_SECONDS"),
        description="How long the gateway reuses the services' health answers.",
    )
    log_level: str = Field(default="info", validation_alias=_env("AUTOFIX_LOG_LEVEL"))
    log_format: Literal["plain", "json"] = Field(
        default="plain",
        description="plain: one readable line per record; json: one JSON object per line.",
        validation_alias=_env("AUTOFIX_LOG_FORMAT"),
    )

    # Access control and limits (README, "Access control").
    auth: Literal["auto", "on", "off"] = Field(
        default="auto",
        validation_alias=_env("AUTOFIX_AUTH"),
        description="auto: API keys required once any key exists or when the gateway listens "
        "beyond loopback; on: always; off: never (loopback only).",
    )
    auth_cache_seconds: float = Field(
        default=5.0,
        gt=0,
        validation_alias=_env("AUTOFIX_AUTH_CACHE_SECONDS"),
        description="How often the gateway reloads the API keys (a revoked key works this long).",
    )
    internal_token: str = Field(
        default="",
        repr=False,
        validation_alias=_env("AUTOFIX_INTERNAL_TOKEN"),
        description="Shared by the gateway and the services; the services refuse calls without "
        "it. `autofix-ml up` makes one when unset.",
    )
    cors_origins: list[str] = Field(
        default_factory=list,
        validation_alias=_env("AUTOFIX_CORS_ORIGINS"),
        description='Origins allowed to call the gateway from a browser, JSON: ["https://x"]; '
        "empty: CORS off.",
    )
    max_body_bytes: int = Field(
        default=64 * 1024,
        ge=1,
        validation_alias=_env("AUTOFIX_MAX_BODY_BYTES"),
        description="Largest request body on every route but ingest (413 above).",
    )
    ingest_max_body_bytes: int = Field(
        default=10 * 1024 * 1024,
        ge=1,
        validation_alias=_env("AUTOFIX_INGEST_MAX_BODY_BYTES"),
        description="Largest request body of POST /metrics/ingest (413 above).",
    )
    rate_predict: float = Field(
        default=100.0,
        ge=0,
        validation_alias=_env("AUTOFIX_RATE_PREDICT"),
        description="Predictions per second per API key (token bucket); 0: no limit.",
    )
    rate_predict_burst: float = Field(
        default=200.0, ge=1, validation_alias=_env("AUTOFIX_RATE_PREDICT_BURST")
    )
    rate_ingest: float = Field(
        default=5.0,
        ge=0,
        validation_alias=_env("AUTOFIX_RATE_INGEST"),
        description="Ingest batches per second per API key (token bucket); 0: no limit.",
    )
    rate_ingest_burst: float = Field(
        default=20.0, ge=1, validation_alias=_env("AUTOFIX_RATE_INGEST_BURST")
    )

    # Anomaly detection.
    anomaly_consecutive: int = Field(
        default=3,
        ge=1,
        validation_alias=_env("ML_ANOMALY_CONSECUTIVE"),
        description="Samples above the threshold in a row before an ML_ANOMALY incident.",
    )
    anomaly_threshold: float = Field(
        default=0.999,
        gt=0.5,
        lt=1.0,
        validation_alias=_env("ML_ANOMALY_THRESHOLD"),
        description="Default threshold of a host's score (its per-metric likelihood, its "
        "forest's on the same scale, or the two layers' joint p), until feedback moves the "
        "host's own.",
    )
    anomaly_threshold_min: float = Field(
        default=0.99,
        gt=0.5,
        lt=1.0,
        validation_alias=_env("ML_ANOMALY_THRESHOLD_MIN"),
        description="Feedback never moves a host's threshold below this.",
    )
    anomaly_threshold_max: float = Field(
        default=0.999999,
        gt=0.5,
        lt=1.0,
        validation_alias=_env("ML_ANOMALY_THRESHOLD_MAX"),
        description="Feedback never moves a host's threshold above this.",
    )
    anomaly_severity_step: float = Field(
        default=1.0,
        gt=0,
        validation_alias=_env("ML_ANOMALY_SEVERITY_STEP"),
        description="Decades of surprise, -log10(1 - score), above the threshold per severity "
        "tier: medium at the threshold, high one step above, critical two.",
    )
    anomaly_resolve_after: int = Field(
        default=3,
        ge=1,
        validation_alias=_env("ML_ANOMALY_RESOLVE_AFTER"),
        description="Normal samples in a row that resolve an ML_ANOMALY incident (and re-arm a "
        "key silenced by a manual resolve).",
    )
    scoring_interval: float = Field(
        default=10.0,
        gt=0,
        validation_alias=_env("ML_SCORING_INTERVAL"),
        description="Seconds between passes of the scoring loop over new samples.",
    )
    anomaly_idle_minutes: float = Field(
        default=30.0,
        gt=0,
        validation_alias=_env("ML_ANOMALY_IDLE_MINUTES"),
        description="A host without a sample this long has its detector state dropped from "
        "memory (it stays in the database and is loaded again with its next sample).",
    )
    anomaly_max_hosts: int = Field(
        default=5000,
        ge=0,
        validation_alias=_env("ML_ANOMALY_MAX_HOSTS"),
        description="Hosts whose detector state is held in memory (about 37 KB each); past "
        "it the least recently used saved one is dropped (it stays in the database and is "
        "loaded again when needed). 0: no bound.",
    )
    anomaly_retrain_hours: float = Field(
        default=24.0,
        gt=0,
        validation_alias=_env("ML_ANOMALY_RETRAIN_HOURS"),
        description="Each host's forest is retrained on its own history this often (first "
        "once it has 3 days of samples).",
    )

    training_prewarm: bool = Field(
        default=True,
        validation_alias=_env("ML_TRAINING_PREWARM"),
        description="Start the trainer's training process (and import the model libraries in "
        "it) 5 s after the trainer starts, so that a training does not pay for it (about "
        "2.5 s); false: on the first training.",
    )
    training_timeout: float = Field(
        default=3600.0,
        gt=0,
        validation_alias=_env("ML_TRAINING_TIMEOUT"),
        description="Seconds a training may run in the training process; past them it is "
        "stopped, the process replaced and the request answered 503.",
    )

    # Failure prediction.
    failure_scoring_interval: float = Field(
        default=60.0,
        gt=0,
        validation_alias=_env("ML_FAILURE_SCORING_INTERVAL"),
        description="Seconds between passes of the failure-prediction loop (each host's new "
        "samples, written to failure_predictions).",
    )
    failure_consecutive: int = Field(
        default=3,
        ge=1,
        validation_alias=_env("ML_FAILURE_CONSECUTIVE"),
        description="Predictions in a row over a threshold before a predicted_failure incident "
        "opens, and under every threshold before it resolves.",
    )

    scoring_lag_limit: float = Field(
        default=300.0,
        gt=0,
        validation_alias=_env("ML_SCORING_LAG_LIMIT"),
        description="Seconds the newest scored sample may trail the newest stored one before "
        "the trainer's health says degraded.",
    )
    loop_stall_intervals: float = Field(
        default=3.0,
        gt=0,
        validation_alias=_env("AUTOFIX_LOOP_STALL_INTERVALS"),
        description="A background loop with no successful pass for this many of its intervals "
        "(and at least AUTOFIX_LOOP_STALL_MIN_SECONDS) is stalled: health says degraded.",
    )
    loop_stall_min_seconds: float = Field(
        default=60.0,
        ge=0,
        validation_alias=_env("AUTOFIX_LOOP_STALL_MIN_SECONDS"),
        description="The least time without a successful pass before a loop counts as stalled.",
    )

    # Incident analysis (docs/incident-analysis.md).
    analysis_provider: Literal["auto", "rules", "ollama", "openai"] = Field(
        default="auto",
        validation_alias=_env("ML_ANALYSIS_PROVIDER"),
        description="Who analyses incidents; auto: ollama when OLLAMA_URL is set, else openai "
        "when OPENAI_BASE_URL is, else the rules (also the fallback of every LLM).",
    )
    ollama_url: str = Field(default="", validation_alias=_env("OLLAMA_URL"))
    ollama_model: str = Field(default="llama3.2:3b", validation_alias=_env("OLLAMA_MODEL"))
    openai_base_url: str = Field(
        default="",
        validation_alias=_env("OPENAI_BASE_URL"),
        description="An OpenAI-compatible API, up to /v1: http://127.0.0.1:8080/v1.",
    )
    openai_api_key: str = Field(default="", repr=False, validation_alias=_env("OPENAI_API_KEY"))
    analysis_model: str = Field(
        default="",
        validation_alias=_env("ML_ANALYSIS_MODEL"),
        description="Model of the OpenAI-compatible endpoint (and Ollama's, if set).",
    )
    analysis_timeout: float = Field(
        default=30.0,
        gt=0,
        validation_alias=_env("ML_ANALYSIS_TIMEOUT"),
        description="Seconds an LLM may take; past it the rules' answer is served.",
    )
    analysis_auto: bool = Field(
        default=True,
        validation_alias=_env("ML_ANALYSIS_AUTO"),
        description="Analyse every incident when it opens.",
    )
    analysis_queue_size: int = Field(
        default=100,
        ge=1,
        validation_alias=_env("ML_ANALYSIS_QUEUE_SIZE"),
        description="Incidents waiting for analysis; beyond it the oldest waits for the sweep.",
    )
    analysis_concurrency: int = Field(
        default=1, ge=1, le=16, validation_alias=_env("ML_ANALYSIS_CONCURRENCY")
    )
    analysis_sweep_seconds: float = Field(
        default=30.0,
        gt=0,
        validation_alias=_env("ML_ANALYSIS_SWEEP_SECONDS"),
        description="How often open incidents without an analysis (the forecaster's) are found.",
    )

    def analysis_provider_in_force(self) -> str:
        """The provider of ML_ANALYSIS_PROVIDER, auto resolved."""
        if self.analysis_provider != "auto":
            return self.analysis_provider
        if self.ollama_url:
            return "ollama"
        if self.openai_base_url:
            return "openai"
        return "rules"

    # Forecasting.
    forecast_refresh_minutes: float = Field(
        default=60.0, gt=0, validation_alias=_env("ML_FORECAST_REFRESH_MINUTES")
    )
    forecast_retrain_hours: float = Field(
        default=24.0,
        ge=0,
        validation_alias=_env("ML_FORECAST_RETRAIN_HOURS"),
        description="Hours between scheduled refits of each host's forecasters; 0 turns it off.",
    )
    forecast_thresholds: dict[str, float] = Field(
        default_factory=dict,
        validation_alias=_env("ML_FORECAST_THRESHOLDS"),
        description='Breach thresholds overriding the catalogue, JSON: {"cpu_usage_percent": 80}.',
    )

    def service_url(self, service: str) -> str:
        """Base URL of a service: its *_URL setting, else loopback on its port."""
        explicit = {
            "collector": self.collector_url,
            "trainer": self.trainer_url,
            "forecaster": self.forecaster_url,
        }[service]
        if explicit:
            return explicit.rstrip("/")
        return f"http://127.0.0.1:{self.port(service)}"

    def port(self, service: str) -> int:
        return {
            "api": self.api_port,
            "collector": self.collector_port,
            "trainer": self.trainer_port,
            "forecaster": self.forecaster_port,
        }[service]

    def public_base_url(self) -> str:
        """The gateway as people reach it: AUTOFIX_PUBLIC_URL, else its bind address and port."""
        return (self.public_url or f"http://{self.bind_host}:{self.api_port}").rstrip("/")

    def effective_scrape_url(self) -> str:
        return self.scrape_url or f"http://127.0.0.1:{self.api_port}/metrics"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
