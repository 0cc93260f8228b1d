"""Config section owned by the serving package (``serving:`` in configs/training.yaml).

Secrets are never in YAML: the section names the environment variables that hold them.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from pydantic import BaseModel, ConfigDict, Field, field_validator

#: what pandas' nanosecond timestamps (hence the feature code) can hold, with a margin
_EARLIEST_STORABLE = datetime(1678, 1, 1, tzinfo=UTC)


class TimeWindowConfig(BaseModel):
    """Timestamps a request may carry (activity times, created_at, as_of, webhook times).

    Outside it a timestamp is a 4xx naming the field: a year-2999 activity is a client bug, and
    accepting it would make that lead's "latest" score unmovable.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    earliest: datetime = datetime(1970, 1, 1, tzinfo=UTC)
    #: how far past the server's clock (the serving cut-off) a timestamp may be (client clock skew)
    future_days: float = Field(default=1.0, ge=0, le=36500)

    @field_validator("earliest")
    @classmethod
    def _storable(cls, value: datetime) -> datetime:
        value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        if value < _EARLIEST_STORABLE:
            raise ValueError(f"must not be before {_EARLIEST_STORABLE:%Y-%m-%d} (what timestamps can hold)")
        return value

    def bounds(self, now: datetime) -> tuple[datetime, datetime]:
        """(earliest, latest) accepted at ``now``."""
        return self.earliest, now + timedelta(days=self.future_days)


class ServingConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    #: registry URI (an alias is resolved to a pinned version at start); ``LEADSCORE_MODEL_URI`` overrides,
    #: ``LEADSCORE_BUNDLE`` (a bundle directory) replaces it
    model_uri: str = "models:/leadscore@champion"
    #: comma-separated API keys for ``Authorization: Bearer <key>``
    api_keys_env: str = "LEADSCORE_API_KEYS"
    #: comma-separated Segment/RudderStack write keys accepted on /v1/batch (HTTP basic user name)
    segment_write_keys_env: str = "LEADSCORE_SEGMENT_WRITE_KEYS"
    #: the HubSpot app's client secret, which signs webhook v3 requests
    hubspot_client_secret_env: str = "LEADSCORE_HUBSPOT_CLIENT_SECRET"
    #: public base URL (scheme://host[:port]) HubSpot calls, when a proxy rewrites the Host we see
    public_base_url_env: str = "LEADSCORE_PUBLIC_BASE_URL"
    #: event store URL (SQLAlchemy); ``LEADSCORE_EVENT_STORE`` overrides; null → ``paths.event_store_url``
    event_store_url: str | None = None
    #: activities kept in memory for scoring reads (SQLite event stores; 0: read every history from SQL).
    #: ~60 bytes each; brought up to date with the store before every read, whoever wrote (serving/cache.py)
    history_cache_rows: int = Field(default=1_000_000, ge=0)
    #: SQLite: seconds between background WAL checkpoints (0: the commit crossing 1000 pages does it)
    wal_checkpoint_seconds: float = Field(default=1.0, ge=0)
    #: limits of every request body (``/score`` and the webhooks too), checked before it is read
    max_event_bytes: int = Field(default=32 * 1024, ge=1024)
    max_batch_bytes: int = Field(default=500 * 1024, ge=1024)
    #: deepest JSON nesting accepted (CRM payloads are a few levels; a 100,000-deep ``[[[...]]]`` is an attack)
    max_json_depth: int = Field(default=32, ge=4, le=500)
    time_window: TimeWindowConfig = Field(default_factory=TimeWindowConfig)
    #: serve the API description (/openapi.json, /api-docs, BentoML's /docs.json) without an API key
    open_docs: bool = False
    #: serve Prometheus /metrics without an API key (a scraper inside the cluster)
    open_metrics: bool = False
    hubspot_max_age_seconds: float = Field(default=300.0, gt=0)
    #: extra Segment event name → activity type mappings (names are lower-cased, non-alphanumerics → "_")
    event_aliases: dict[str, str] = Field(default_factory=dict)
    port: int = Field(default=3000, ge=1, le=65535)
    workers: int = Field(default=1, ge=1)
