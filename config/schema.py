"""The typed configuration schema: every key the server reads, with its default.

Pydantic does the validation so that an operator's mistake is reported with the
path of the offending key and what was expected, instead of a traceback later.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w|y)?\s*$")
_DURATION_UNITS_MS = {
    "ms": 1,
    "s": 1000,
    "m": 60_000,
    "h": 3_600_000,
    "d": 86_400_000,
    "w": 7 * 86_400_000,
    "y": 365 * 86_400_000,
}
_SIZE_RE = re.compile(r"^\s*(\d+)\s*([KMG]i?B?|B)?\s*$", re.IGNORECASE)


def parse_duration_ms(value: object) -> int:
    """Accept an integer (milliseconds) or a string such as ``30s``, ``12h``, ``365d``."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 500ms, 30s, 12h or 365d")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        match = _DURATION_RE.match(value)
        if match:
            number, unit = match.groups()
            return int(float(number) * _DURATION_UNITS_MS[unit or "ms"])
    raise ValueError("expected a duration such as 500ms, 30s, 12h or 365d")


def parse_size_bytes(value: object) -> int:
    """Accept an integer (bytes) or a string such as ``64K``, ``50M``, ``1G``."""
    if isinstance(value, bool):
        raise ValueError("expected a size such as 65536, 64K or 50M")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        match = _SIZE_RE.match(value)
        if match:
            number, unit = match.groups()
            factor = {"": 1, "B": 1, "K": 1024, "M": 1024**2, "G": 1024**3}[
                (unit or "").upper()[:1] or ""
            ]
            return int(number) * factor
    raise ValueError("expected a size such as 65536, 64K or 50M")


DurationMs = Annotated[int, BeforeValidator(parse_duration_ms), Field(ge=0)]
SizeBytes = Annotated[int, BeforeValidator(parse_size_bytes), Field(ge=0)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


ResourceName = Literal["client", "federation", "media", "admin", "metrics"]


def _default_resources() -> list[ResourceName]:
    return ["client", "federation"]


class ListenerConfig(_Section):
    port: int = Field(ge=0, le=65535)
    bind_addresses: list[str] = Field(default_factory=lambda: ["127.0.0.1"])
    tls: bool = False
    tls_certificate_path: str | None = None
    tls_private_key_path: str | None = None
    resources: list[ResourceName] = Field(default_factory=_default_resources)

    @model_validator(mode="after")
    def _tls_needs_files(self) -> ListenerConfig:
        if self.tls and not (self.tls_certificate_path and self.tls_private_key_path):
            raise ValueError("tls: true needs tls_certificate_path and tls_private_key_path")
        return self


class SqliteArgs(_Section):
    database: str = "homeserver.db"


class PostgresArgs(_Section):
    host: str = "127.0.0.1"
    port: int = 5432
    user: str | None = None
    password: str | None = None
    dbname: str = "matrix"
    cp_min: int = Field(default=2, ge=1)
    cp_max: int = Field(default=8, ge=1)


class DatabaseConfig(_Section):
    name: Literal["sqlite", "postgres"] = "sqlite"
    args: dict[str, object] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check_args(self) -> DatabaseConfig:
        # Validate the args against the engine's own schema, so that typos are caught.
        if self.name == "sqlite":
            SqliteArgs.model_validate(self.args)
        else:
            PostgresArgs.model_validate(self.args)
        return self

    @property
    def sqlite(self) -> SqliteArgs:
        return SqliteArgs.model_validate(self.args)

    @property
    def postgres(self) -> PostgresArgs:
        return PostgresArgs.model_validate(self.args)


class RegistrationConfig(_Section):
    enabled: bool = False
    shared_secret: str | None = None
    requires_token: bool = False
    password_min_length: int = Field(default=8, ge=0, le=512)


class PasswordHashingConfig(_Section):
    bcrypt_rounds: int = Field(default=12, ge=4, le=31)
    pepper: str = ""


class RateLimit(_Section):
    per_second: float = Field(gt=0)
    burst_count: int = Field(ge=1)


def _limit(per_second: float, burst: int) -> RateLimit:
    return RateLimit(per_second=per_second, burst_count=burst)


class RateLimitConfig(_Section):
    enabled: bool = True
    registration: RateLimit = Field(default_factory=lambda: _limit(0.17, 3))
    login_address: RateLimit = Field(default_factory=lambda: _limit(0.17, 3))
    login_account: RateLimit = Field(default_factory=lambda: _limit(0.17, 3))
    login_failed_attempts: RateLimit = Field(default_factory=lambda: _limit(0.17, 3))
    message: RateLimit = Field(default_factory=lambda: _limit(0.2, 10))
    admin_register: RateLimit = Field(default_factory=lambda: _limit(1.0, 10))


class PrivacyConfig(_Section):
    client_ip_retention: DurationMs = parse_duration_ms("365d")
    client_ip_flush_interval: DurationMs = parse_duration_ms("5s")
    client_ip_purge_interval: DurationMs = parse_duration_ms("1h")
    trusted_proxies: list[str] = Field(default_factory=list)

    @field_validator("trusted_proxies")
    @classmethod
    def _valid_networks(cls, value: list[str]) -> list[str]:
        for entry in value:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                raise ValueError(f"{entry!r} is not an IP address or CIDR network") from None
        return value


class MediaConfig(_Section):
    store_path: str = "media_store"
    max_upload_size: SizeBytes = parse_size_bytes("50M")


class LoggingConfig(_Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    file: str | None = None
    access_log: bool = True


class MetricsConfig(_Section):
    enabled: bool = True


class WellKnownConfig(_Section):
    serve_server: bool = True
    server_delegation: str | None = None
    client_extra: dict[str, object] = Field(default_factory=dict)


class HttpConfig(_Section):
    max_request_body_size: SizeBytes = parse_size_bytes("1M")
    cors_allowed_origin: str = "*"


_SERVER_NAME_RE = re.compile(
    r"^(\[[0-9a-fA-F:.]+\]|[0-9]{1,3}(\.[0-9]{1,3}){3}|[A-Za-z0-9\-.]{1,255})(:[0-9]{1,5})?$"
)


class HomeserverConfig(_Section):
    server_name: str
    public_baseurl: str | None = None
    signing_key_path: str
    listeners: list[ListenerConfig] = Field(
        default_factory=lambda: [ListenerConfig(port=8008)], min_length=1
    )
    database: DatabaseConfig = Field(default_factory=DatabaseConfig)
    registration: RegistrationConfig = Field(default_factory=RegistrationConfig)
    password_hashing: PasswordHashingConfig = Field(default_factory=PasswordHashingConfig)
    rate_limiting: RateLimitConfig = Field(default_factory=RateLimitConfig)
    privacy: PrivacyConfig = Field(default_factory=PrivacyConfig)
    media: MediaConfig = Field(default_factory=MediaConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    well_known: WellKnownConfig = Field(default_factory=WellKnownConfig)
    http: HttpConfig = Field(default_factory=HttpConfig)
    require_auth_for_profile_requests: bool = False

    @field_validator("server_name")
    @classmethod
    def _valid_server_name(cls, value: str) -> str:
        if not _SERVER_NAME_RE.match(value):
            raise ValueError("expected a server name such as example.org or localhost:8448")
        return value

    @field_validator("public_baseurl")
    @classmethod
    def _valid_baseurl(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not value.startswith(("http://", "https://")):
            raise ValueError("expected an http:// or https:// URL")
        return value if value.endswith("/") else value + "/"

    @property
    def effective_public_baseurl(self) -> str:
        if self.public_baseurl:
            return self.public_baseurl
        host = self.server_name.split(":")[0]
        return f"https://{host}/"
