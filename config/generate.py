"""The commented configuration written by ``--generate-config``.

The text is the configuration reference: each key is explained where the
operator edits it. The signing key is written beside it by the caller.
"""

from __future__ import annotations

import secrets

_TEMPLATE = """\
# Homeserver configuration. Durations accept ms/s/m/h/d/w/y suffixes (e.g. 30s, 365d);
# sizes accept K/M/G suffixes (e.g. 64K, 50M). Relative paths are relative to this file.

# The domain part of every user ID on this server (@alice:{server_name}). Cannot be
# changed once users exist.
server_name: "{server_name}"

# The URL clients use to reach this server, advertised in /login answers and in
# /.well-known/matrix/client. Clients switch to it, so set it to the address where this
# server (or its reverse proxy) really answers; while it is unset nothing is advertised.
{public_baseurl_line}

# The ed25519 key this server signs events and federation requests with. Generated
# beside this file; keep it secret and back it up.
signing_key_path: "{signing_key_path}"

# Where the server listens. Resources: client, federation, media, admin, metrics.
# Add `tls: true` with tls_certificate_path / tls_private_key_path (PEM files) to
# serve HTTPS directly, or put a reverse proxy in front (see privacy.trusted_proxies).
listeners:
  - port: {port}
    bind_addresses: ["{bind_address}"]
    resources: [client, federation, media, admin]
  # Prometheus metrics; keep them on loopback or behind authentication.
  - port: {metrics_port}
    bind_addresses: ["127.0.0.1"]
    resources: [metrics]

# The database. The embedded default is SQLite (one file, nothing to set up):
database:
  name: sqlite
  args:
    database: "{database_path}"
# For production use PostgreSQL (create the database with ENCODING 'UTF8' LC_COLLATE 'C'
# LC_CTYPE 'C' TEMPLATE template0):
#database:
#  name: postgres
#  args:
#    host: 127.0.0.1
#    port: 5432
#    user: matrix
#    password: secret
#    dbname: matrix
#    cp_min: 2
#    cp_max: 8
#    # Repeated reads are prepared once per connection; false behind a pooler (pgbouncer
#    # in transaction mode) that moves a session's statements between connections.
#    prepared_statements: true

registration:
  # Let anyone create an account through /register.
  enabled: {registration_enabled}
  # When enabled, require a registration token (created through the admin API) too.
  requires_token: false
  # Lets an operator create accounts with `homeserver-register-user` or the
  # /_synapse/admin/v1/register API. Keep it secret; remove it to disable.
  shared_secret: "{shared_secret}"
  # Shortest password accepted on registration and password change.
  password_min_length: 8
  # New accounts start with their localpart as display name (false: no display name).
  localpart_as_displayname: true

password_hashing:
  # bcrypt cost factor: each +1 doubles the time to hash (12 is about 0.25 s).
  bcrypt_rounds: 12
  # An optional secret mixed into every hash (kept out of the database). Changing it
  # invalidates every stored password.
  pepper: ""

# Token buckets per action: `per_second` refill rate and `burst_count` capacity.
# Set enabled: false for load tests and benchmarks only.
rate_limiting:
  enabled: true
  registration: {{per_second: 0.17, burst_count: 3}}
  login_address: {{per_second: 0.17, burst_count: 3}}
  login_account: {{per_second: 0.17, burst_count: 3}}
  login_failed_attempts: {{per_second: 0.17, burst_count: 3}}
  message: {{per_second: 0.2, burst_count: 10}}
  admin_register: {{per_second: 1.0, burst_count: 10}}

privacy:
  # How long the client IP address and user agent of each session are kept. Users see
  # them in their session list; older records are deleted by a background job.
  client_ip_retention: 365d
  # Addresses of reverse proxies whose X-Forwarded-For header is believed. Requests
  # from any other peer are recorded with the peer's own address.
  trusted_proxies: []
  # Data exports (users' own and admins'): where they are written, how long kept.
  export_path: "exports"
  export_retention: 7d
  # How often users' own "delete my messages older than..." settings are applied.
  message_retention_interval: 1h

# The privacy policy and terms users accept (served at /_matrix/consent; asked for at
# registration; required again, with a server notice, whenever the version changes).
consent:
  enabled: false
  version: "1.0"
  #template_path: "privacy_policy.html"
  minimum_age: 16

# Message retention of rooms (MSC1763, m.room.retention), and deletion of the original
# content of redacted events.
retention:
  enabled: false
  #default_max_lifetime: 365d
  #allowed_lifetime_min: 1d
  #allowed_lifetime_max: 3650d
  purge_interval: 1h
  redaction_retention_period: 7d

# In-memory cache capacities (entries; for state_groups, room-state entries: a room state
# of N entries counts N), scaled by global_factor; names and defaults in
# homeserver/caches.py, sizes and hit rates on /metrics.
caches:
  global_factor: 1.0
  #sizes:
  #  events: 10000

# The oldest generation of Python objects (the caches, mostly) is collected on this timer
# rather than whenever the interpreter's counters say: each such collection pauses the
# server for as long as it takes to walk the heap. 0: the interpreter's own thresholds.
garbage_collection:
  full_collection_interval: 5m

media:
  store_path: "{media_store_path}"
  max_upload_size: 50M
  # Total a single user may upload (0: no quota).
  max_user_quota: 0
  # The legacy unauthenticated /_matrix/media/v3 download/thumbnail endpoints. Off by
  # default; or set legacy_unauthenticated_before (ms since 1970) to keep them for media
  # uploaded before that moment only.
  legacy_unauthenticated: false
  url_preview_enabled: false

voip:
  # TURN servers for calls, with the shared secret of their REST API (coturn's
  # static-auth-secret).
  turn_uris: []
  #turn_shared_secret: "..."
  turn_user_lifetime: 1h

user_directory:
  # Find every local user, rather than only people you share a room with or who are in
  # public rooms.
  search_all_users: false

http:
  # Largest JSON request body accepted (media uploads have their own limit above).
  max_request_body_size: 1M

rooms:
  # The room version of new rooms unless the client asks for another (12 is what the
  # spec recommends).
  default_room_version: "12"
  # Longest a /sync request may wait for something to happen.
  max_sync_timeout: 60s
  # Only a room's joined members may create aliases for it (admins always may); with
  # require_power_for_aliases, only those allowed to set its canonical alias.
  require_membership_for_aliases: true
  require_power_for_aliases: false

presence:
  # Share online/offline status with people you share a room with.
  enabled: true

logging:
  level: INFO
  # Write the log to a file instead of standard error.
  #file: "homeserver.log"
  access_log: true
  # false: the access log writes "-" instead of each client's IP address.
  access_log_ips: true

metrics:
  enabled: true

well_known:
  # Serve /.well-known/matrix/server, pointing federation at server_delegation
  # (host:port), or at <server_name>:443 when unset.
  serve_server: true
  #server_delegation: "matrix.example.org:443"

# Require an access token to look up other users' profiles.
require_auth_for_profile_requests: false
"""


def generate_config_text(
    server_name: str,
    signing_key_path: str,
    database_path: str = "homeserver.db",
    media_store_path: str = "media_store",
    port: int = 8008,
    bind_address: str = "127.0.0.1",
    metrics_port: int = 9000,
    registration_enabled: bool = False,
    public_baseurl: str | None = None,
) -> str:
    public_baseurl_line = (
        f'public_baseurl: "{public_baseurl}"'
        if public_baseurl
        else '#public_baseurl: "https://matrix.example.org/"'
    )
    return _TEMPLATE.format(
        server_name=server_name,
        signing_key_path=signing_key_path,
        database_path=database_path,
        media_store_path=media_store_path,
        port=port,
        bind_address=bind_address,
        metrics_port=metrics_port,
        registration_enabled="true" if registration_enabled else "false",
        shared_secret=secrets.token_urlsafe(32),
        public_baseurl_line=public_baseurl_line,
    )
