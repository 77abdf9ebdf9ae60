"""One settings object for the API, the worker and the CLI.

Read from the environment (and `.env`), never at import time: call `get_settings()`.
Secrets are `SecretStr` so they never show up in logs or reprs.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = PROJECT_ROOT / ".data"

PLACEHOLDER_SECRETS = {"", "change-me", "changeme", "dev-admin-key", "dev-secret-key"}


class Settings(BaseSettings):
    """Every knob of igny8, in one place."""

    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    environment: Literal["development", "test", "production"] = "development"
    log_level: str = "INFO"
    log_format: Literal["text", "json"] = Field(
        default="text", description="`json`: one JSON object per log line, with the ids it is about"
    )

    # Operations: 0 (the default) serves nothing, so tests and `igny8 up` never collide.
    worker_metrics_port: int = Field(
        default=0, ge=0, description="A worker's /metrics (igny8's and the Temporal SDK's); 0 = off"
    )
    worker_health_port: int = Field(
        default=0,
        ge=0,
        description="A worker's /health/live and /health/ready; may equal the metrics port",
    )
    api_metrics_port: int = Field(
        default=0, ge=0, description="The API's /metrics, apart from its public port; 0 = off"
    )
    metrics_host: str = Field(
        default="127.0.0.1", description="Where the metrics and health ports listen"
    )
    otel_exporter_otlp_endpoint: str | None = Field(
        default=None,
        description="OTLP/HTTP collector (e.g. http://otel-collector:4318); unset = no tracing",
    )
    otel_service_name: str = "igny8"

    data_dir: Path = Field(
        default=DATA_DIR,
        description="Local state: the SQLite database, Temporal's dev-server file, media, logs",
    )
    database_url: str = Field(
        default="",
        description="SQLAlchemy URL; empty means a SQLite file in data_dir; "
        "postgresql+psycopg://… in production",
    )
    db_pool_size: int = 20
    progress_feed: bool = Field(
        default=True,
        description="On PostgreSQL, workflows push each change of a run's progress to the "
        "API's SSE watchers by NOTIFY; off (behind PgBouncer in transaction mode, where "
        "LISTEN does not work) the API polls only",
    )

    temporal_address: str = Field(
        default="", description="host:port of a Temporal frontend; empty starts the embedded one"
    )
    temporal_namespace: str = "default"
    task_queue: str = "igny8"
    temporal_ui_port: int = 8233
    temporal_ui_url: str = Field(
        default="",
        description="The Temporal UI as browsers reach it (the dashboard links runs to it); "
        "empty: http://127.0.0.1:<temporal_ui_port>",
    )
    temporal_port: int = 7233

    openai_api_key: SecretStr | None = None
    openai_base_url: str | None = None
    runware_api_key: SecretStr | None = None
    runware_base_url: str = "https://api.runware.ai/v1"
    provider_timeout_s: float = 120.0

    simulator_host: str = "127.0.0.1"
    simulator_port: int = 8299

    api_host: str = "127.0.0.1"
    api_port: int = 8000

    demo_wordpress_port: int = Field(
        default=8881,
        description="Where `make run` serves its local WordPress (the fake's port is free-chosen)",
    )

    admin_api_key: SecretStr = SecretStr("dev-admin-key")
    secret_key: SecretStr = SecretStr("dev-secret-key")

    media_dir: Path | None = None
    media_store: Literal["local", "s3"] = Field(
        default="local",
        description="Where images live: `local` (MEDIA_DIR, one host) or `s3` (shared by all)",
    )
    s3_bucket: str = "igny8-media"
    s3_endpoint_url: str | None = Field(
        default=None, description="An S3-compatible server (MinIO); unset means AWS S3"
    )
    s3_region: str = "us-east-1"
    s3_access_key_id: SecretStr | None = Field(
        default=None, description="Unset (with the secret): boto3's chain (env, IAM role)"
    )
    s3_secret_access_key: SecretStr | None = None
    s3_prefix: str = Field(default="", description="Key prefix inside the bucket, e.g. `igny8`")

    hold_ttl_seconds: int = 6 * 3600
    activity_concurrency: int = 200
    worker_processes: int = Field(
        default=2, ge=1, description="Worker processes `igny8 up` starts (one per core scales)"
    )
    activity_task_pollers: int = Field(
        default=20, ge=1, description="Concurrent activity polls: a wave of C images starts at once"
    )

    @field_validator(
        "openai_api_key",
        "runware_api_key",
        "openai_base_url",
        "otel_exporter_otlp_endpoint",
        mode="before",
    )
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        """`OPENAI_API_KEY=` (empty) means no key: use the simulator, not a blank key."""
        if value is None or (isinstance(value, str) and not value.strip()):
            return None
        return value

    @field_validator("s3_endpoint_url", "s3_access_key_id", "s3_secret_access_key", mode="before")
    @classmethod
    def _empty_s3_is_unset(cls, value: object) -> object:
        """Compose passes `S3_ENDPOINT_URL=` (empty) for "not set": that means AWS itself
        and boto3's own credential chain, not an endpoint or a key of ""."""
        if isinstance(value, str) and not value.strip():
            return None
        return value

    @field_validator("s3_prefix")
    @classmethod
    def _clean_s3_prefix(cls, value: str) -> str:
        """`media/`, `/media` and `media` name one folder; `..` or `a//b` name none."""
        prefix = value.strip().strip("/")
        if prefix and any(part in ("", ".", "..") for part in prefix.split("/")):
            raise ValueError(f"S3_PREFIX {value!r} has an empty, '.' or '..' part")
        return prefix

    @model_validator(mode="after")
    def _check_s3(self) -> Settings:
        """Fail at start-up, not on the first image a worker stores."""
        if self.media_store != "s3":
            return self
        if not self.s3_bucket.strip():
            raise ValueError("MEDIA_STORE=s3 needs S3_BUCKET (the bucket that holds the images)")
        if (self.s3_access_key_id is None) != (self.s3_secret_access_key is None):
            raise ValueError(
                "set both S3_ACCESS_KEY_ID and S3_SECRET_ACCESS_KEY, or neither "
                "(then boto3 finds credentials itself: AWS_* variables, an IAM role)"
            )
        return self

    @model_validator(mode="after")
    def _derive_paths(self) -> Settings:
        """Defaults that live under data_dir follow it when it is moved."""
        if not self.database_url:
            self.database_url = f"sqlite:///{self.data_dir / 'igny8.db'}"
        if self.media_dir is None:
            self.media_dir = self.data_dir / "media"
        return self

    @model_validator(mode="after")
    def _refuse_placeholder_secrets(self) -> Settings:
        if self.environment == "production":
            for name in ("admin_api_key", "secret_key"):
                if getattr(self, name).get_secret_value() in PLACEHOLDER_SECRETS:
                    raise ValueError(
                        f"{name.upper()} is a placeholder; set a real secret in production"
                    )
        return self

    @property
    def simulator_url(self) -> str:
        return f"http://{self.simulator_host}:{self.simulator_port}"

    @property
    def uses_simulator(self) -> bool:
        """No real key: every AI call goes to the local OpenAI-compatible simulator."""
        return self.openai_api_key is None and not self.openai_base_url


@lru_cache
def get_settings() -> Settings:
    return Settings()
