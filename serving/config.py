"""Config section owned by the serving package."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class ServingConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model_uri: str = "models:/leadscore@champion"
    api_keys_env: str = "LEADSCORE_API_KEYS"
    segment_write_keys_env: str = "LEADSCORE_SEGMENT_WRITE_KEYS"
    hubspot_client_secret_env: str = "LEADSCORE_HUBSPOT_CLIENT_SECRET"
    max_event_bytes: int = 32 * 1024
    max_batch_bytes: int = 500 * 1024
    port: int = Field(default=3000, ge=1, le=65535)
