"""Service settings: one `Settings` class, read from `VIDSIEVE_*` environment variables or built explicitly.

`get_settings()` builds it once, on first use (never at import), so tests and Ray workers can set the
environment first or pass their own `Settings(...)` to `create_app`.
"""

from __future__ import annotations

import ipaddress
from functools import lru_cache
from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from encoders.errors import BadRequest

MiB = 1024 * 1024


class Settings(BaseSettings):
    """Everything an operator may set. Limits are per request unless named otherwise."""

    model_config = SettingsConfigDict(env_prefix="VIDSIEVE_", extra="forbid", frozen=True)

    host: str = Field("127.0.0.1", description="address to listen on")
    port: int = Field(8000, ge=0, le=65535, description="TCP port")
    model_dir: str | None = Field(None, description="model checkpoint directory (None: the engine's default)")
    ray_address: str | None = Field(None, description="run the stages as actors on this Ray cluster")
    api_key: str | None = Field(None, description="when set, /v1/* requires 'Authorization: Bearer <key>'")
    allowed_media_dir: Path | None = Field(None, description="file:// video URLs are allowed only inside this directory")
    allow_remote_urls: bool = Field(False, description="allow http(s):// video URLs (fetched by the server)")
    allow_insecure_public: bool = Field(False, description="allow a non-loopback host without an API key")

    max_upload_mb: float = Field(200.0, gt=0, description="largest accepted video, in MiB")
    max_duration_s: float = Field(1800.0, gt=0, description="longest accepted video, in seconds")
    max_pixels: int = Field(3840 * 2160, gt=0, description="largest accepted frame, width*height")
    max_frames: int = Field(256, ge=1, description="largest max_frames a request may ask for")
    max_new_tokens: int = Field(1024, ge=1, description="largest max_new_tokens a request may ask for")

    workers: int = Field(1, ge=1, description="requests computed at once (worker threads)")
    queue_size: int = Field(8, ge=0, description="requests allowed to wait for a worker; more are refused with 429")
    timeout_s: float = Field(300.0, gt=0, description="per-request limit, waiting included; past it: 504")

    files_dir: Path | None = Field(None, description="where uploads and /v1/files live (None: a fresh temp dir)")
    max_files: int = Field(64, ge=1, description="most files kept by /v1/files at once")
    max_files_mb: float = Field(2048.0, gt=0, description="most MiB kept by /v1/files at once")
    file_ttl_s: float = Field(3600.0, gt=0, description="seconds an uploaded file is kept")

    @field_validator("allowed_media_dir")
    @classmethod
    def _resolve_media_dir(cls, v: Path | None) -> Path | None:
        if v is None:
            return None
        v = Path(v).expanduser().resolve()
        if not v.is_dir():
            raise ValueError(f"allowed_media_dir {v} is not a directory")
        return v

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * MiB)

    @property
    def max_files_bytes(self) -> int:
        return int(self.max_files_mb * MiB)

    def check_exposure(self) -> None:
        """Refuse to listen on a non-loopback address without an API key unless explicitly allowed."""
        if self.api_key or self.allow_insecure_public or is_loopback(self.host):
            return
        raise BadRequest(
            f"--host {self.host} is reachable from other machines and no API key is set; "
            "pass --api-key (or set VIDSIEVE_API_KEY), or --allow-insecure-public to serve without one"
        )


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a hostname we cannot judge: treat as public


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings from the environment, built on first call."""
    return Settings()
