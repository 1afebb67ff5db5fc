"""Server settings: command-line options, ``VIMKIT_*`` environment variables and an optional TOML file.

Precedence, highest first: explicit keyword arguments (the CLI options), environment variables,
the TOML config file, defaults. Every value is validated by pydantic so that a bad value stops
start-up with one line naming it (see :func:`format_settings_error`).
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

DriverName = Literal["sim", "qemu", "openstack"]


class SettingsError(Exception):
    """A configuration value is invalid; the message is one line naming it."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="VIMKIT_", extra="forbid", validate_default=True)

    host: str = Field("127.0.0.1", description="Address the HTTP server listens on.")
    port: int = Field(8700, ge=1, le=65535)
    data_dir: Path = Field(Path("./.vimkit"), description="Holds the SQLite database and keys.")
    database_url: str | None = Field(
        None, description="SQLAlchemy URL; default SQLite in the data directory."
    )
    otel_telemetry: bool = Field(
        False, description="FastAPI's native OpenTelemetry traces, metrics and logs (through the "
        "globally configured OpenTelemetry providers), for FastAPI versions that have it.")
    sqlite_analyze_interval: float = Field(
        600.0, gt=0, le=86_400,
        description="Seconds between refreshes of SQLite's query planner statistics (also done at start).")
    driver: DriverName = "sim"
    config: Path | None = Field(None, description="TOML config file (keys as in this model).")
    vim_id: str = Field("vimkit", min_length=1, max_length=64)
    page_size: int = Field(100, ge=1, le=10_000, description="Maximum items per collection page.")
    max_body_bytes: int = Field(1_048_576, ge=1024, description="Larger request bodies get 413.")
    max_prefer_wait: float = Field(60.0, ge=0, le=3600, description="Cap for Prefer: wait=N.")
    idempotency_ttl_hours: float = Field(24.0, ge=24.0, description="How long keys are kept.")
    log_json: bool = Field(False, description="Emit structured JSON logs.")
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    seed_flavours: bool = Field(True, description="Seed the public flavours on a fresh database.")
    token_lifetime_seconds: int = Field(3600, ge=60, le=86_400, description="Access token lifetime.")
    token_issuer: str = Field("vimkit", min_length=1, description="The `iss` claim of issued tokens.")
    admin_client_id: str | None = Field(None, description="Bootstrap admin client id.")
    admin_client_secret: SecretStr | None = Field(None, description="Bootstrap admin client secret.")
    # --- security (docs/security.md) ---
    rate_limit_rate: float = Field(
        0.0, ge=0, description="Sustained requests per second per consumer (token bucket); 0 disables."
    )
    rate_limit_burst: int = Field(100, ge=1, le=1_000_000, description="Token bucket size per consumer.")
    audit_enabled: bool = Field(True, description="Record every mutating call in the audit log.")
    external_jwks_url: str | None = Field(
        None, description="JWKS URL of an external OAuth 2.0 issuer whose tokens are also accepted."
    )
    external_issuer: str | None = Field(None, description="Required `iss` of external tokens.")
    external_audience: str | None = Field(None, description="Required `aud` of external tokens.")
    external_resource_group_claim: str = Field(
        "rg", min_length=1, description="External token claim naming the resource group."
    )
    external_scope_claim: str | None = Field(
        None, description="External token claim holding the scopes (default `scope`, then `scp`)."
    )
    external_scope_map: dict[str, str] = Field(
        default_factory=dict, description="Renames external scopes to vimkit scopes."
    )
    external_allow_admin: bool = Field(False, description="Honour the `admin` scope in external tokens.")
    external_jwks_cache_seconds: float = Field(300.0, gt=0, le=86_400, description="JWKS cache lifetime.")
    tls_cert: Path | None = Field(None, description="PEM server certificate (chain): serve HTTPS.")
    tls_key: Path | None = Field(None, description="PEM private key of the server certificate.")
    tls_client_ca: Path | None = Field(
        None, description="PEM CA bundle: require client certificates signed by it (mutual TLS)."
    )

    @model_validator(mode="after")
    def _check_security(self) -> "Settings":
        if self.external_jwks_url:
            if not self.external_issuer or not self.external_audience:
                raise ValueError("external_jwks_url needs external_issuer and external_audience")
            if self.external_issuer == self.token_issuer:
                raise ValueError("external_issuer must differ from token_issuer")
            parsed = urlsplit(self.external_jwks_url)
            loopback = parsed.hostname in ("127.0.0.1", "::1", "localhost")
            if parsed.scheme != "https" and not (parsed.scheme == "http" and loopback):
                raise ValueError("external_jwks_url must be https:// (http:// only on loopback)")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key must be given together")
        if self.tls_client_ca is not None and self.tls_cert is None:
            raise ValueError("tls_client_ca needs tls_cert and tls_key")
        return self

    # --- infrastructure (docs/infrastructure.md) ---
    inventory_file: Path | None = Field(
        None, description="TOML inventory of zones, hosts, storage pools and provider networks."
    )
    placement_strategy: Literal["spread", "pack"] = Field(
        "spread", description="spread: most free host first; pack: fullest host that fits."
    )
    sim_seed: int = Field(0, description="Seed of the simulated infrastructure (latencies, workloads).")
    sim_latency_scale: float = Field(
        1.0, ge=0, le=100, description="Multiplies the simulated operation latencies; 0 disables them."
    )
    # --- QEMU backend (docs/qemu.md) ---
    qemu_accel: Literal["auto", "kvm", "tcg"] = Field(
        "auto", description="QEMU accelerator; auto uses KVM only where the CPU has VT-x/SVM."
    )
    qemu_guest_dir: Path | None = Field(
        None, description="Default guest (vmlinuz + initramfs.img); default <data_dir>/qemu/guest."
    )
    qemu_boot_timeout: float = Field(120.0, gt=0, le=3600, description="Seconds from launch to the ready marker.")
    qemu_stop_timeout: float = Field(
        10.0, ge=0, le=600, description="Seconds a guest gets to honour an ACPI powerdown before it is ended."
    )
    qemu_max_concurrent_boots: int | None = Field(
        None, ge=1, le=256, description="VMs booting at once; default one per CPU (TCG boots are CPU-bound)."
    )

    # --- fault management (docs/faults.md) ---
    alarm_capacity_threshold: float = Field(
        0.9, gt=0, le=1, description="A zone or pool allocated at or above this share raises an alarm."
    )
    alarm_retention_hours: float = Field(24.0, ge=0, description="How long cleared alarms stay queryable.")
    capacity_notify_interval: float = Field(
        5.0, gt=0, le=3600,
        description="At most one capacity InformationChangeNotification per zone per this many seconds.")
    compute_task_alarm_seconds: float = Field(
        600.0, gt=0, le=86_400,
        description="A compute task (allocate, operate, scale, migrate, terminate) running longer raises an alarm.")
    alarm_check_interval: float = Field(5.0, gt=0, le=3600, description="Seconds between the VIM's own checks.")

    # --- performance management (docs/performance.md) ---
    pm_sample_interval: float = Field(
        5.0, ge=0.1, le=300, description="Seconds between samples of measured objects; collection periods are multiples."
    )
    pm_min_collection_period: int = Field(5, ge=1, le=86_400, description="Shortest collectionPeriod, seconds.")
    pm_min_reporting_period: int = Field(5, ge=1, le=86_400, description="Shortest reportingPeriod, seconds.")
    pm_report_retention_hours: float = Field(24.0, ge=0, description="How long performance reports are kept.")

    # --- notifications (docs/notifications.md) ---
    public_url: str | None = Field(
        None, description="Base URL the VIM is reached at, used in _links; default http://host:port."
    )
    secret_key: SecretStr | None = Field(
        None, description="Fernet key encrypting subscription credentials; shared by replicas."
    )
    replica_id: str | None = Field(None, max_length=64, description="This replica's name in delivery leases.")
    notify_callback_allow: list[str] = Field(
        default_factory=list, description="CIDRs callbacks may resolve to; empty allows all but the deny-list."
    )
    notify_callback_deny: list[str] | None = Field(
        None, description="CIDRs callbacks may never resolve to; default link-local and metadata addresses."
    )
    notify_request_timeout: float = Field(10.0, gt=0, le=300, description="Seconds per callback request.")
    notify_backoff_base: float = Field(0.5, gt=0, le=60, description="First retry delay in seconds.")
    notify_backoff_cap: float = Field(300.0, gt=0, le=86_400, description="Longest retry delay in seconds.")
    notify_give_up_seconds: float = Field(
        86_400.0, gt=0, description="After failing this long a subscription is marked FAILING."
    )
    notify_concurrency: int = Field(64, ge=1, le=1024, description="Subscriptions served at once.")
    notify_retention_seconds: float = Field(3600.0, ge=0, description="How long delivered notifications are kept.")
    notify_poll_interval: float = Field(0.5, gt=0, le=60, description="How often other replicas' work is looked for.")
    notify_workers: int = Field(
        0, ge=0, le=16, description="Delivery worker processes started by vimkit serve; 0 delivers in the server process.")

    @field_validator("database_url")
    @classmethod
    def _check_database_url(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        if not value.startswith(("sqlite", "postgresql")):
            raise ValueError("must be a sqlite:// or postgresql:// SQLAlchemy URL")
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings)

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'vimkit.db').resolve()}"


def format_settings_error(error: ValidationError) -> str:
    first = error.errors()[0]
    name = ".".join(str(part) for part in first["loc"]) or "settings"
    extra = f" ({len(error.errors()) - 1} more)" if len(error.errors()) > 1 else ""
    return f"invalid setting '{name}': {first['msg']}{extra}"


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
    except FileNotFoundError as exc:
        raise SettingsError(f"invalid setting 'config': file {path} does not exist") from exc
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"invalid setting 'config': {path} is not valid TOML: {exc}") from exc
    section = data.get("vimkit", data)
    if not isinstance(section, dict):
        raise SettingsError(f"invalid setting 'config': {path} has no [vimkit] table")
    return {key.replace("-", "_"): value for key, value in section.items()}


def load_settings(**overrides: Any) -> Settings:
    """Build settings: CLI overrides beat ``VIMKIT_*`` variables, which beat the config file."""
    explicit = {key: value for key, value in overrides.items() if value is not None}
    config_path = explicit.get("config") or os.environ.get("VIMKIT_CONFIG")
    from_file = _read_toml(Path(config_path)) if config_path else {}
    unknown = sorted(set(from_file) - set(Settings.model_fields))
    if unknown:
        raise SettingsError(f"invalid setting '{unknown[0]}': unknown key in {config_path}")
    set_by_env = {name for name in Settings.model_fields if f"VIMKIT_{name.upper()}" in os.environ}
    merged = {k: v for k, v in from_file.items() if k not in set_by_env}
    merged.update(explicit)
    try:
        return Settings(**merged)
    except ValidationError as exc:
        raise SettingsError(format_settings_error(exc)) from exc
