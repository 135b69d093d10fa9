"""Process settings from the environment (``IOC_`` prefix) and ``var/ioc.env``.

Unknown ``IOC_*`` keys are refused so that a typo never silently falls back to a default.
"""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from core.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
ENV_FILE = Path(os.environ.get("IOC_ENV_FILE", ROOT / "var" / "ioc.env"))


class Settings(BaseSettings):
    """Everything a process needs to find its services and its site."""

    model_config = SettingsConfigDict(
        env_prefix="IOC_", env_file=ENV_FILE, extra="forbid", case_sensitive=False
    )

    database_url: SecretStr = Field(
        SecretStr("postgresql://ioc@127.0.0.1:5432/ioc"),
        description="Owner connection (migrations, ingest).",
    )
    database_app_password: SecretStr | None = None
    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_prefix: str = Field("ioc", pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    mqtt_host: str = "127.0.0.1"
    mqtt_port: int = Field(1884, ge=1, le=65535)
    mqtt_bind: str | None = Field(None, description="Broker listen address (default: mqtt_host).")
    mqtt_password: SecretStr = Field(
        SecretStr("change-me"), description="Master secret for broker service accounts."
    )
    topic_prefix: str = Field("ioc", pattern=r"^[A-Za-z0-9_-]{1,64}$")
    site_file: Path = ROOT / "sites" / "iahdrai.yaml"
    var_dir: Path = ROOT / "var"
    api_host: str = "127.0.0.1"
    api_port: int = Field(8000, ge=1, le=65535)
    jwt_secret: SecretStr = SecretStr("dev-only-secret-change-me-please-0123456789")
    access_token_minutes: int = Field(15, ge=1, le=1440)
    refresh_token_days: int = Field(14, ge=1, le=365, description="Refresh token lifetime.")
    ws_buffer_frames: int = Field(
        256,
        ge=8,
        le=100_000,
        description="Frames queued for a websocket client before dropping it.",
    )
    ingest_client_id: str = Field(
        "ioc-ingest-1",
        pattern=r"^[A-Za-z0-9_-]{1,64}$",
        description="Stable MQTT client id of this ingest process (one per process).",
    )
    ingest_shared: bool = Field(
        False,
        description="Join the MQTT 5 shared subscription group (several ingest processes). "
        "Mosquitto 2.0 does not restore shared subscriptions after a broker restart, so a single "
        "process uses a plain persistent subscription, which survives one.",
    )
    ingest_batch_max: int = Field(2000, ge=1, le=100_000)
    ingest_batch_ms: int = Field(50, ge=1, le=10_000)
    mqtt_receive_maximum: int = Field(
        4000, ge=1, le=65535, description="In-flight QoS 1 window; must exceed ingest_batch_max."
    )
    retention_raw_days: int = Field(90, ge=1, le=36_500, description="Raw readings kept.")
    retention_rollup_days: int = Field(730, ge=1, le=36_500, description="Rollups kept.")
    metrics_token: SecretStr | None = Field(
        None, description="Bearer token a Prometheus scraper presents at /metrics."
    )
    log_level: str = "INFO"
    production: bool = Field(
        False, description="Production: TLS only (MQTT 8883, HTTPS), plain ports off."
    )
    mqtt_tls: bool = Field(False, description="Clients connect to the broker over TLS.")
    mqtt_tls_port: int = Field(8883, ge=1, le=65535)
    mqtt_plain: bool = Field(
        True, description="Broker keeps its plain listener (not in production)."
    )
    api_tls: bool = Field(False, description="Serve the API over HTTPS.")
    tls_hostnames: str = Field("localhost", description="Comma-separated names in the server cert.")

    @model_validator(mode="after")
    def _production_is_tls_only(self) -> Settings:
        if self.production:
            self.mqtt_tls, self.mqtt_plain, self.api_tls = True, False, True
        return self

    @property
    def tls_dir(self) -> Path:
        return self.var_dir / "tls"

    def mqtt_endpoint(self) -> tuple[str, int]:
        """Where clients connect: the TLS port when TLS is on."""
        return self.mqtt_host, self.mqtt_tls_port if self.mqtt_tls else self.mqtt_port

    log_format: Literal["json", "text"] = Field("json", description="Structured JSON or text logs.")
    smtp_host: str | None = Field(None, description="Mail relay for notifications and reports.")
    smtp_port: int = Field(25, ge=1, le=65535)
    smtp_from: str = "ioc@localhost"
    smtp_user: str | None = None
    smtp_password: SecretStr | None = None
    smtp_starttls: bool = False
    smtp_timeout_s: float = Field(10, gt=0, le=120)

    @property
    def database_host(self) -> str:
        parts = urlsplit(self.database_url.get_secret_value())
        return f"{parts.hostname or 'localhost'}:{parts.port or 5432}"


def _check_unknown_keys() -> None:
    known = {f"IOC_{name.upper()}" for name in Settings.model_fields}
    known |= {"IOC_ENV_FILE", "IOC_CACHE_DIR"}
    unknown = sorted(
        k for k in os.environ if k.upper().startswith("IOC_") and k.upper() not in known
    )
    if unknown:
        raise ConfigError(f"unknown setting {unknown[0]} (known: see README, 'Configuration')")


def load_settings(**overrides: object) -> Settings:
    """Read and validate settings; raise ConfigError naming the bad key."""
    _check_unknown_keys()
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        err = exc.errors()[0]
        key = "IOC_" + "_".join(str(p) for p in err["loc"]).upper()
        raise ConfigError(f"bad setting {key}: {err['msg']}") from None


@cache
def get_settings() -> Settings:
    return load_settings()
