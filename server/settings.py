"""Process settings: from the environment (prefix EXCISE_) or the CLI.

Secrets (API keys, admin key) have no defaults, which maps onto Kubernetes
Secrets; what is served (variants, experiments) lives in the config file, a
ConfigMap.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class ServerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="EXCISE_", extra="forbid")

    config: Path | None = Field(None, description="Variants/experiments file (YAML or JSON).")
    artifacts: Path | None = Field(None, description="Folder whose artifact manifests define variants.")
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    # Comma-separated in the environment (EXCISE_API_KEYS=a,b); empty = no auth.
    api_keys: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)
    admin_key: SecretStr | None = None
    allow_unauthenticated: bool = Field(False, description="Serve without API keys on a non-loopback address.")
    corrections_root: Path | None = Field(
        None, description="POST /v1/corrections loads folders under this one only (default: the artifacts folder)."
    )
    docs: bool = Field(False, description="Serve /docs and /openapi.json.")

    max_body_bytes: int = Field(1_000_000, gt=0, description="Larger request bodies get 413.")
    max_in_flight: int = Field(256, gt=0, description="Generation requests beyond this get 429.")
    retry_after_s: int = Field(1, ge=0)
    drain_timeout_s: float = Field(30.0, ge=0, description="Graceful shutdown waits this long for in-flight requests.")

    toxicity: bool = Field(True, description="Score outputs for toxicity off the request path.")
    toxicity_threshold: float = Field(0.5, ge=0, le=1)
    toxicity_queue_size: int = Field(1024, gt=0)

    log_level: str = "INFO"

    @field_validator("api_keys", mode="before")
    @classmethod
    def _split_keys(cls, value):
        if isinstance(value, str):
            return [k.strip() for k in value.split(",") if k.strip()]
        return value

    @model_validator(mode="after")
    def _one_source(self):
        if self.config is not None and self.artifacts is not None:
            raise ValueError("give either config or artifacts, not both")
        if self.config is None and self.artifacts is None:
            raise ValueError("give a config file (--config) or an artifacts folder (--artifacts)")
        if not self.api_keys and not self.allow_unauthenticated and not _loopback(self.host):
            raise ValueError(
                f"host {self.host} is reachable from other machines and no API key is set; give --api-key "
                "(or EXCISE_API_KEYS), bind 127.0.0.1, or pass --allow-unauthenticated to serve it open"
            )
        return self


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        return False
