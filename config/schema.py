"""The typed configuration schema: every key the server reads, with its default.

msgspec does the validation, so that an operator's mistake is reported with the
path of the offending key and what was expected. (msgspec rather than pydantic:
it validates as well and costs a sixth of the memory, which matters for a server
that promises to be lean.)
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Any, Literal

import msgspec

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
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str):
        match = _DURATION_RE.match(value)
        if match:
            number, unit = match.groups()
            return int(float(number) * _DURATION_UNITS_MS[unit or "ms"])
    raise ValueError("expected a duration such as 500ms, 30s, 12h or 365d")


def parse_size_bytes(value: object) -> int:
    """Accept an integer (bytes) or a string such as ``64K``, ``50M``, ``1G``."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str):
        match = _SIZE_RE.match(value)
        if match:
            number, unit = match.groups()
            factor = {"": 1, "B": 1, "K": 1024, "M": 1024**2, "G": 1024**3}[
                (unit or "").upper()[:1]
            ]
            return int(number) * factor
    raise ValueError("expected a size such as 65536, 64K or 50M")


def _normalise(section: Any, field: str, parse: Any) -> None:
    """Turn a duration/size field given as text into its number, naming the field on error."""
    try:
        setattr(section, field, parse(getattr(section, field)))
    except ValueError as e:
        raise ValueError(f"{field}: {e}") from None


# Durations and sizes are written as numbers or text in YAML, and are numbers once loaded.
Duration = int | str
Size = int | str
Port = Annotated[int, msgspec.Meta(ge=0, le=65535)]
ResourceName = Literal["client", "federation", "media", "admin", "metrics"]


class _Section(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    pass


def _default_resources() -> list[ResourceName]:
    return ["client", "federation"]


class ListenerConfig(_Section):
    port: Port
    bind_addresses: list[str] = msgspec.field(default_factory=lambda: ["127.0.0.1"])
    tls: bool = False
    tls_certificate_path: str | None = None
    tls_private_key_path: str | None = None
    resources: list[ResourceName] = msgspec.field(default_factory=_default_resources)

    def __post_init__(self) -> None:
        if self.tls and not (self.tls_certificate_path and self.tls_private_key_path):
            raise ValueError("tls: true needs tls_certificate_path and tls_private_key_path")


class SqliteArgs(_Section):
    database: str = "homeserver.db"


class PostgresArgs(_Section):
    host: str = "127.0.0.1"
    port: Port = 5432
    user: str | None = None
    password: str | None = None
    dbname: str = "matrix"
    cp_min: Annotated[int, msgspec.Meta(ge=1)] = 2
    cp_max: Annotated[int, msgspec.Meta(ge=1)] = 8
    # Plain reads the server repeats are prepared once per connection (PostgreSQL then
    # skips parsing and, once it settles on a generic plan, planning). Turn off behind a
    # connection pooler that hands one session's statements to different connections.
    prepared_statements: bool = True


class DatabaseConfig(_Section):
    name: Literal["sqlite", "postgres"] = "sqlite"
    args: dict[str, Any] = msgspec.field(default_factory=dict)

    def __post_init__(self) -> None:
        # Validate the args against the engine's own schema, so that typos are caught.
        try:
            self.engine_args()
        except msgspec.ValidationError as e:
            raise ValueError(f"args: {e}".replace(" - at `$", " - at `$.args")) from None

    def engine_args(self) -> SqliteArgs | PostgresArgs:
        if self.name == "sqlite":
            return msgspec.convert(self.args, SqliteArgs)
        return msgspec.convert(self.args, PostgresArgs)

    @property
    def sqlite(self) -> SqliteArgs:
        return msgspec.convert(self.args, SqliteArgs)

    @property
    def postgres(self) -> PostgresArgs:
        return msgspec.convert(self.args, PostgresArgs)


class RegistrationConfig(_Section):
    enabled: bool = False
    shared_secret: str | None = None
    requires_token: bool = False
    password_min_length: Annotated[int, msgspec.Meta(ge=0, le=512)] = 8
    localpart_as_displayname: bool = True


class SessionsConfig(_Section):
    # Access tokens of clients that asked for refresh tokens live this long.
    refreshable_access_token_lifetime: Duration = "5m"
    # And their refresh tokens this long (unset: until used).
    refresh_token_lifetime: Duration | None = None
    # A signed-in device may get a single-use token to sign in another one (QR login);
    # the token lives this long. login_token_enabled: false turns the feature off.
    login_token_enabled: bool = True
    login_token_lifetime: Duration = "2m"

    def __post_init__(self) -> None:
        _normalise(self, "refreshable_access_token_lifetime", parse_duration_ms)
        _normalise(self, "login_token_lifetime", parse_duration_ms)
        if self.refresh_token_lifetime is not None:
            _normalise(self, "refresh_token_lifetime", parse_duration_ms)

    @property
    def access_lifetime_ms(self) -> int:
        return int(self.refreshable_access_token_lifetime)

    @property
    def refresh_lifetime_ms(self) -> int | None:
        return int(self.refresh_token_lifetime) if self.refresh_token_lifetime is not None else None


class PasswordHashingConfig(_Section):
    bcrypt_rounds: Annotated[int, msgspec.Meta(ge=4, le=31)] = 12
    pepper: str = ""


class RateLimit(_Section):
    per_second: Annotated[float, msgspec.Meta(gt=0)]
    burst_count: Annotated[int, msgspec.Meta(ge=1)]


def _limit(per_second: float, burst: int) -> Any:
    return msgspec.field(
        default_factory=lambda: RateLimit(per_second=per_second, burst_count=burst)
    )


class RateLimitConfig(_Section):
    enabled: bool = True
    registration: RateLimit = _limit(0.17, 3)
    login_address: RateLimit = _limit(0.17, 3)
    login_account: RateLimit = _limit(0.17, 3)
    login_failed_attempts: RateLimit = _limit(0.17, 3)
    message: RateLimit = _limit(0.2, 10)
    admin_register: RateLimit = _limit(1.0, 10)
    # Requests from one other server (transactions, reads, joins), per second.
    federation: RateLimit = _limit(50.0, 200)
    # A user asking for an export of their data: two at once, then one an hour.
    data_export: RateLimit = _limit(1 / 3600, 2)


class PrivacyConfig(_Section):
    client_ip_retention: Duration = "365d"
    client_ip_flush_interval: Duration = "5s"
    client_ip_purge_interval: Duration = "1h"
    trusted_proxies: list[str] = msgspec.field(default_factory=list)
    # Where data exports are written (relative to the configuration file), and how long a
    # finished one is kept for its requester to download.
    export_path: str = "exports"
    export_retention: Duration = "7d"
    # How often users' own message-retention settings are applied.
    message_retention_interval: Duration = "1h"

    def __post_init__(self) -> None:
        for field in (
            "client_ip_retention",
            "client_ip_flush_interval",
            "client_ip_purge_interval",
            "export_retention",
            "message_retention_interval",
        ):
            _normalise(self, field, parse_duration_ms)
        for entry in self.trusted_proxies:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                raise ValueError(
                    f"trusted_proxies: {entry!r} is not an IP address or CIDR network"
                ) from None

    # Typed views for the code that reads them (always numbers after loading).
    @property
    def retention_ms(self) -> int:
        return int(self.client_ip_retention)

    @property
    def flush_interval_ms(self) -> int:
        return int(self.client_ip_flush_interval)

    @property
    def purge_interval_ms(self) -> int:
        return int(self.client_ip_purge_interval)

    @property
    def export_retention_ms(self) -> int:
        return int(self.export_retention)

    @property
    def message_retention_interval_ms(self) -> int:
        return int(self.message_retention_interval)


PRIVATE_RANGES = (
    "127.0.0.0/8", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10",
    "192.0.0.0/24", "169.254.0.0/16", "192.88.99.0/24", "198.18.0.0/15", "192.0.2.0/24",
    "198.51.100.0/24", "203.0.113.0/24", "224.0.0.0/4", "0.0.0.0/8", "255.255.255.255/32",
    "::1/128", "fe80::/10", "fc00::/7", "2001:db8::/32", "ff00::/8", "fec0::/10", "::/128",
)  # fmt: skip


class OEmbedProvider(_Section):
    url_patterns: list[str]
    endpoint: str


class MediaConfig(_Section):
    store_path: str = "media_store"
    max_upload_size: Size = "50M"
    # Total bytes one user may store; 0 means no quota.
    max_user_quota: Size = 0
    # The legacy unauthenticated /_matrix/media/v3 download and thumbnail endpoints: off,
    # on, or only for media uploaded before ``legacy_unauthenticated_before`` (ms).
    legacy_unauthenticated: bool = False
    legacy_unauthenticated_before: int | None = None
    url_preview_enabled: bool = False
    # Previews never fetch from these addresses (checked after DNS, on every redirect).
    url_preview_ip_range_blacklist: list[str] = msgspec.field(
        default_factory=lambda: list(PRIVATE_RANGES)
    )
    url_preview_ip_range_whitelist: list[str] = msgspec.field(default_factory=list)
    url_preview_max_size: Size = "10M"
    url_preview_timeout: Duration = "10s"
    url_preview_cache_time: Duration = "1h"
    # Sites asked through their oEmbed endpoint: {url_patterns: [globs], endpoint: URL}.
    url_preview_oembed: list[OEmbedProvider] = msgspec.field(default_factory=list)
    # How long a media ID reserved with /create waits for its upload.
    unused_expires_after: Duration = "24h"
    thumbnail_sizes: list[list[int]] = msgspec.field(
        default_factory=lambda: [[32, 32], [96, 96], [320, 240], [640, 480], [800, 600]]
    )

    def __post_init__(self) -> None:
        _normalise(self, "max_upload_size", parse_size_bytes)
        _normalise(self, "max_user_quota", parse_size_bytes)
        _normalise(self, "unused_expires_after", parse_duration_ms)
        _normalise(self, "url_preview_max_size", parse_size_bytes)
        _normalise(self, "url_preview_timeout", parse_duration_ms)
        _normalise(self, "url_preview_cache_time", parse_duration_ms)
        for network in self.url_preview_ip_range_blacklist + self.url_preview_ip_range_whitelist:
            try:
                ipaddress.ip_network(network)
            except ValueError:
                raise ValueError(
                    f"url_preview_ip_range_*: {network!r} is not an IP range"
                ) from None

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_size)

    @property
    def quota_bytes(self) -> int:
        return int(self.max_user_quota)


class VoipConfig(_Section):
    turn_uris: list[str] = msgspec.field(default_factory=list)
    turn_shared_secret: str | None = None
    turn_user_lifetime: Duration = "1h"

    def __post_init__(self) -> None:
        _normalise(self, "turn_user_lifetime", parse_duration_ms)


class UserDirectoryConfig(_Section):
    # Search every local user, not only those who share a room or are in public rooms.
    search_all_users: bool = False


class LoggingConfig(_Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    file: str | None = None
    access_log: bool = True
    # The access log is the operator's record; false writes "-" where the client's
    # address would be, so no log keeps an IP.
    access_log_ips: bool = True


class MetricsConfig(_Section):
    enabled: bool = True


class SupportContact(_Section):
    role: str
    matrix_id: str | None = None
    email_address: str | None = None


class WellKnownConfig(_Section):
    serve_server: bool = True
    server_delegation: str | None = None
    client_extra: dict[str, Any] = msgspec.field(default_factory=dict)
    # /.well-known/matrix/support: who to contact (roles such as m.role.admin,
    # m.role.security) and a support page; served only when one of them is set.
    support_contacts: list[SupportContact] = msgspec.field(default_factory=list)
    support_page: str | None = None


class TrustedKeyServer(_Section):
    server_name: str
    # key ID -> unpadded base64 ed25519 public key. Without keys, the notary's own keys
    # are fetched from it directly (trust on first use).
    verify_keys: dict[str, str] = msgspec.field(default_factory=dict)


class OldVerifyKey(_Section):
    key: str
    expired_ts: int


class FederationConfig(_Section):
    enabled: bool = True
    # Check remote servers' TLS certificates (turn off only for a private test federation).
    verify_certificates: bool = True
    # An extra CA (PEM file) trusted for federation, beside the system's.
    ca_file: str | None = None
    # Only these servers may federate with us (and we with them); None means everyone.
    domain_whitelist: list[str] | None = None
    # Notaries asked for a server's keys when it cannot be asked directly.
    trusted_key_servers: list[TrustedKeyServer] = msgspec.field(default_factory=list)
    # How long the keys we publish may be cached by others.
    key_validity: Duration = "1d"
    # Keys this server signed with before, still published for verifying old events.
    old_verify_keys: dict[str, OldVerifyKey] = msgspec.field(default_factory=dict)
    # Outbound requests give up after this long.
    request_timeout: Duration = "60s"
    # The longest wait between retries to an unreachable destination.
    max_retry_interval: Duration = "6h"
    # Outbound requests (federation, remote media, well-known look-ups) never go to these
    # addresses, whatever a remote server or DNS says; the whitelist makes exceptions.
    ip_range_blacklist: list[str] = msgspec.field(default_factory=lambda: list(PRIVATE_RANGES))
    ip_range_whitelist: list[str] = msgspec.field(default_factory=list)
    # Requests one other server may have in progress at once (more are answered 429).
    max_concurrent_requests_per_origin: Annotated[int, msgspec.Meta(ge=1)] = 20

    def __post_init__(self) -> None:
        for field in ("ip_range_blacklist", "ip_range_whitelist"):
            for network in getattr(self, field):
                try:
                    ipaddress.ip_network(network)
                except ValueError:
                    raise ValueError(f"{field}: {network!r} is not an IP range") from None
        _normalise(self, "key_validity", parse_duration_ms)
        _normalise(self, "request_timeout", parse_duration_ms)
        _normalise(self, "max_retry_interval", parse_duration_ms)

    @property
    def key_validity_ms(self) -> int:
        return int(self.key_validity)

    @property
    def request_timeout_ms(self) -> int:
        return int(self.request_timeout)

    @property
    def max_retry_interval_ms(self) -> int:
        return int(self.max_retry_interval)

    def allows(self, server_name: str) -> bool:
        return self.domain_whitelist is None or server_name in self.domain_whitelist


class EmailConfig(_Section):
    # Outgoing mail for e-mail addresses on accounts (validation, password reset). Unset
    # smtp_host: no e-mail features.
    smtp_host: str | None = None
    smtp_port: Port = 25
    smtp_user: str | None = None
    smtp_pass: str | None = None
    # STARTTLS is required when the server offers it (and refused when it does not)
    # unless this is false; force_tls speaks TLS from the first byte (port 465).
    require_transport_security: bool = True
    force_tls: bool = False
    notif_from: str = "Homeserver <noreply@localhost>"
    # How long a validation link or code stays good.
    validation_token_lifetime: Duration = "1h"
    # Offer an e-mail address as a registration step.
    registration_email: bool = True

    def __post_init__(self) -> None:
        _normalise(self, "validation_token_lifetime", parse_duration_ms)

    @property
    def enabled(self) -> bool:
        return self.smtp_host is not None


class ServerNoticesConfig(_Section):
    # The system user that sends server notices; unset: no server notices.
    system_mxid_localpart: str | None = None
    system_mxid_display_name: str = "Server Notices"
    room_name: str = "Server Notices"


class AdminConfig(_Section):
    # "Log in as" a user through the admin API (always audited). Off unless switched on.
    allow_login_as: bool = False
    # How long the audit log of admin looks at users' data is kept.
    audit_log_retention: Duration = "730d"

    def __post_init__(self) -> None:
        _normalise(self, "audit_log_retention", parse_duration_ms)


class PresenceConfig(_Section):
    enabled: bool = True


class RoomsConfig(_Section):
    # The spec recommends version 12 for new rooms.
    default_room_version: str = "12"
    max_sync_timeout: Duration = "60s"
    # Who may point a new alias at a room: its joined members, or (when
    # require_power_for_aliases) only those allowed to send m.room.canonical_alias.
    # Server admins always may.
    require_membership_for_aliases: bool = True
    require_power_for_aliases: bool = False
    # A sliding sync connection unused this long is forgotten (its client starts afresh).
    sliding_sync_connection_lifetime: Duration = "7d"

    def __post_init__(self) -> None:
        if self.default_room_version not in [str(v) for v in range(1, 13)]:
            raise ValueError("default_room_version: expected a room version from 1 to 12")
        _normalise(self, "max_sync_timeout", parse_duration_ms)
        _normalise(self, "sliding_sync_connection_lifetime", parse_duration_ms)

    @property
    def max_sync_timeout_ms(self) -> int:
        return int(self.max_sync_timeout)

    @property
    def sliding_sync_connection_lifetime_ms(self) -> int:
        return int(self.sliding_sync_connection_lifetime)


class CachesConfig(_Section):
    """Sizes of the in-memory caches (entries, and for ``state_groups`` room-state entries;
    see homeserver/caches.py for the names and defaults), all scaled by ``global_factor``."""

    global_factor: float = 1.0
    sizes: dict[str, int] = msgspec.field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.global_factor <= 0:
            raise ValueError("caches.global_factor must be positive")
        for name, size in self.sizes.items():
            if size < 1:
                raise ValueError(f"caches.sizes.{name} must be at least 1")


class GarbageCollectionConfig(_Section):
    """How often the interpreter's oldest generation is collected (see
    homeserver/gc_policy.py); 0 leaves the interpreter's own thresholds in charge."""

    full_collection_interval: Duration = "5m"

    def __post_init__(self) -> None:
        _normalise(self, "full_collection_interval", parse_duration_ms)

    @property
    def full_collection_interval_ms(self) -> int:
        return int(self.full_collection_interval)


class ConsentConfig(_Section):
    """The privacy policy and terms users accept: served at /_matrix/consent, asked for at
    registration (m.login.terms), and required again whenever ``version`` changes."""

    enabled: bool = False
    version: str = "1.0"
    policy_name: str = "Privacy policy and terms of use"
    # An HTML file the operator writes ($name, $version, $server, $form are filled in);
    # unset: a built-in page with the age rules.
    template_path: str | None = None
    # Users confirm they are at least this old (GDPR: 16; COPPA: 13); unset: not asked.
    minimum_age: int | None = 16
    # Sending is refused (M_CONSENT_NOT_GIVEN) until the current version is accepted.
    block_until_consent: bool = True
    # Sent from the server notices user when the version changes ($url: the user's link).
    notice: str = (
        "Our privacy policy and terms have changed. Please read and accept them to keep "
        "sending messages: $url"
    )
    # The key of the links' signatures; unset: derived from the server's signing key.
    form_secret: str | None = None


class RetentionConfig(_Section):
    """Room message retention (MSC1763) and how long redacted content is kept."""

    # Purge messages past a room's m.room.retention max_lifetime (or the default below).
    enabled: bool = False
    # For rooms without an m.room.retention event (unset: such rooms keep everything).
    default_max_lifetime: Duration | None = None
    # A room's own max_lifetime is held within these bounds (unset: no bound).
    allowed_lifetime_min: Duration | None = None
    allowed_lifetime_max: Duration | None = None
    purge_interval: Duration = "1h"
    # A redacted event's original content is deleted from the database this long after
    # the redaction (unset: kept; it is never served either way).
    redaction_retention_period: Duration | None = "7d"

    def __post_init__(self) -> None:
        _normalise(self, "purge_interval", parse_duration_ms)
        for name in ("default_max_lifetime", "allowed_lifetime_min", "allowed_lifetime_max",
                     "redaction_retention_period"):  # fmt: skip
            if getattr(self, name) is not None:
                _normalise(self, name, parse_duration_ms)

    def ms(self, name: str) -> int | None:
        value = getattr(self, name)
        return None if value is None else int(value)


class HttpConfig(_Section):
    max_request_body_size: Size = "1M"
    cors_allowed_origin: str = "*"

    def __post_init__(self) -> None:
        _normalise(self, "max_request_body_size", parse_size_bytes)

    @property
    def max_body_bytes(self) -> int:
        return int(self.max_request_body_size)


_SERVER_NAME_RE = re.compile(
    r"^(\[[0-9a-fA-F:.]+\]|[0-9]{1,3}(\.[0-9]{1,3}){3}|[A-Za-z0-9\-.]{1,255})(:[0-9]{1,5})?$"
)


class HomeserverConfig(_Section):
    server_name: str
    signing_key_path: str
    public_baseurl: str | None = None
    listeners: Annotated[list[ListenerConfig], msgspec.Meta(min_length=1)] = msgspec.field(
        default_factory=lambda: [ListenerConfig(port=8008)]
    )
    database: DatabaseConfig = msgspec.field(default_factory=DatabaseConfig)
    registration: RegistrationConfig = msgspec.field(default_factory=RegistrationConfig)
    password_hashing: PasswordHashingConfig = msgspec.field(default_factory=PasswordHashingConfig)
    sessions: SessionsConfig = msgspec.field(default_factory=SessionsConfig)
    rate_limiting: RateLimitConfig = msgspec.field(default_factory=RateLimitConfig)
    privacy: PrivacyConfig = msgspec.field(default_factory=PrivacyConfig)
    media: MediaConfig = msgspec.field(default_factory=MediaConfig)
    logging: LoggingConfig = msgspec.field(default_factory=LoggingConfig)
    metrics: MetricsConfig = msgspec.field(default_factory=MetricsConfig)
    well_known: WellKnownConfig = msgspec.field(default_factory=WellKnownConfig)
    federation: FederationConfig = msgspec.field(default_factory=FederationConfig)
    email: EmailConfig = msgspec.field(default_factory=EmailConfig)
    admin: AdminConfig = msgspec.field(default_factory=AdminConfig)
    server_notices: ServerNoticesConfig = msgspec.field(default_factory=ServerNoticesConfig)
    http: HttpConfig = msgspec.field(default_factory=HttpConfig)
    rooms: RoomsConfig = msgspec.field(default_factory=RoomsConfig)
    retention: RetentionConfig = msgspec.field(default_factory=RetentionConfig)
    consent: ConsentConfig = msgspec.field(default_factory=ConsentConfig)
    caches: CachesConfig = msgspec.field(default_factory=CachesConfig)
    garbage_collection: GarbageCollectionConfig = msgspec.field(
        default_factory=GarbageCollectionConfig
    )
    presence: PresenceConfig = msgspec.field(default_factory=PresenceConfig)
    voip: VoipConfig = msgspec.field(default_factory=VoipConfig)
    user_directory: UserDirectoryConfig = msgspec.field(default_factory=UserDirectoryConfig)
    require_auth_for_profile_requests: bool = False

    def __post_init__(self) -> None:
        if not _SERVER_NAME_RE.match(self.server_name):
            raise ValueError("server_name: expected a server name such as example.org")
        if self.public_baseurl is not None:
            if not self.public_baseurl.startswith(("http://", "https://")):
                raise ValueError("public_baseurl: expected an http:// or https:// URL")
            if not self.public_baseurl.endswith("/"):
                self.public_baseurl += "/"


def validate(raw: dict[str, Any]) -> HomeserverConfig:
    """Raises ``msgspec.ValidationError`` whose message names the key (``$.a.b``)."""
    return msgspec.convert(raw, HomeserverConfig)
