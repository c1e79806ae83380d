"""The service's settings: one pydantic-settings class read from `CVAE_*` environment variables.

`get_settings()` returns the process-wide instance; tests build their own `Settings(...)` and hand it
to `create_app`, so nothing here is read at import time.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from app.cpus import available_cpus
from model.config import IMAGE_PIXELS
from model.registry import VERSION_PATTERN

DEVICE_PATTERN = re.compile(r"^(auto|cpu|cuda|cuda:\d+)$")


class Settings(BaseSettings):
    """Every knob of the service; each field is also the env var `CVAE_<FIELD>`."""

    model_config = SettingsConfigDict(env_prefix="CVAE_", extra="ignore", frozen=True)

    registry: Path = Field(
        Path("./registry"), description="Model registry root (same as the training job's)."
    )
    device: str = Field("auto", description="auto (CUDA when available), cpu, cuda or cuda:N.")
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    workers: Annotated[int, Field(ge=1, le=64)] | Literal["auto"] = Field(
        "auto", description="uvicorn worker processes; auto = the CPUs this process may use (1 on CUDA)."
    )
    torch_threads: int = Field(0, ge=0, description="Intra-op threads per worker; 0 = automatic.")
    max_batch_size: int = Field(64, ge=1, le=1024, description="Requests sharing one forward pass.")
    max_batch_wait_ms: float = Field(2.0, ge=0, le=1000, description="How long a batch waits to fill.")
    max_queue_depth: int = Field(1024, ge=1, description="Queued requests before 503 + Retry-After.")
    request_timeout_s: float = Field(10.0, gt=0, description="Per-request deadline for inference.")
    max_body_bytes: int = Field(5_000_000, ge=1024)
    body_timeout_s: float = Field(
        30.0, gt=0, description="Deadline to receive a whole request body after its headers (408 after)."
    )
    max_header_bytes: int = Field(
        32_768, ge=1024, description="Request line + headers limit in bytes (431 after)."
    )
    max_headers: int = Field(100, ge=8, description="Header fields per request (431 after).")
    header_timeout_s: float = Field(
        10.0,
        gt=0,
        description="Deadline to receive a request's headers (408 after; an idle new connection is closed).",
    )
    max_connections: int = Field(
        2048, ge=1, description="Open connections per worker; a request over the cap gets 503."
    )
    send_timeout_s: float = Field(
        30.0,
        gt=0,
        description="A connection whose client reads nothing of its answers for this long is closed.",
    )
    keep_alive_timeout_s: int = Field(
        5, ge=1, description="An idle keep-alive connection is closed after this long."
    )
    max_image_pixels: int = Field(16_000_000, ge=IMAGE_PIXELS)
    admin_token: SecretStr | None = Field(None, description="Bearer token of /admin; unset = admin off.")
    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    max_loaded_versions: int = Field(2, ge=1, le=32, description="Versions kept loaded (LRU).")
    version_loads_per_minute: float = Field(
        6.0,
        ge=0,
        description="Loads of a not-loaded version that `version=` requests may cause a minute "
        "(503 + Retry-After beyond; the admin load is not limited).",
    )
    default_temperature: float | None = Field(
        None,
        ge=0,
        le=2,
        description="Temperature when a request gives none; unset = the version's own "
        "`default_temperature` (the one its quality was measured at), else 1.0.",
    )
    registry_poll_s: float = Field(
        2.0,
        ge=0,
        description="How often the registry's active pointer is checked; a new active version is loaded "
        "and warmed in the background, then swapped in. 0 = off (start-up and admin promotions only).",
    )
    model_version: str | None = Field(
        None, description="Pin: serve exactly this version (e.g. v0003) and ignore the active pointer."
    )
    drain_delay_s: float = Field(
        0.0,
        ge=0,
        le=300,
        description="After SIGTERM, keep serving this long with /readyz answering 503 (so a load balancer "
        "stops sending), then stop accepting, finish in-flight and queued work, exit 0.",
    )
    log_level: Literal["critical", "error", "warning", "info", "debug"] = "info"
    log_json: bool = True

    @field_validator("device")
    @classmethod
    def _check_device(cls, value: str) -> str:
        value = value.strip().lower()
        if not DEVICE_PATTERN.match(value):
            raise ValueError("device must be auto, cpu, cuda or cuda:N")
        return value

    @field_validator("model_version", mode="before")
    @classmethod
    def _check_version(cls, value: object) -> object:
        if value in ("", None):
            return None
        if not isinstance(value, str) or not VERSION_PATTERN.match(value.strip()):
            raise ValueError("model_version must name a registry version such as v0003")
        return value.strip()

    @field_validator("admin_token", mode="before")
    @classmethod
    def _empty_token_is_none(cls, value: object) -> object:
        return None if value in ("", None) else value

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        """Accept a JSON list or a comma-separated string (the natural env var form)."""
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [part.strip() for part in text.split(",") if part.strip()]
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _lower_level(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    def worker_count(self, cuda: bool = False) -> int:
        """Worker processes: the setting, or with `auto` one per CPU this process may use (cgroup-aware)
        and a single one on CUDA (one process owns the GPU and batches for it)."""
        if self.workers != "auto":
            return self.workers
        return 1 if cuda else available_cpus()

    def intra_op_threads(self, cuda: bool = False) -> int:
        """Torch threads for this worker: the setting, else its share of the CPUs minus one for the
        event loop, at least 1 and at most 4 (idle OpenMP threads spin and steal the loop's core; small
        batches gain nothing from more)."""
        if self.torch_threads:
            return self.torch_threads
        return min(4, max(1, available_cpus() // self.worker_count(cuda) - 1))


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    return Settings()
