"""Config section owned by the serving package (``serving:`` in configs/training.yaml).

Secrets are never in YAML: the section names the environment variables that hold them.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


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
    max_event_bytes: int = Field(default=32 * 1024, ge=1024)
    max_batch_bytes: int = Field(default=500 * 1024, ge=1024)
    hubspot_max_age_seconds: float = Field(default=300.0, gt=0)
    #: extra Segment event name → activity type mappings (names are lower-cased, non-alphanumerics → "_")
    event_aliases: dict[str, str] = Field(default_factory=dict)
    port: int = Field(default=3000, ge=1, le=65535)
    workers: int = Field(default=1, ge=1)
