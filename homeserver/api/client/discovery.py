"""What a client asks first: spec versions, .well-known and capabilities."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from homeserver.errors import not_found
from homeserver.http.server import MatrixRequest, Router
from homeserver.http.servlet import client_paths
from rooms.versions import KNOWN_ROOM_VERSIONS

if TYPE_CHECKING:
    from homeserver.server import HomeServer

# The spec versions whose client-server modules this server implements. Clients use it to
# pick endpoints (v1.11 tells Element to use the authenticated media endpoints), so it must
# not claim what is missing. Not yet claimed beyond v1.11: federation-dependent features.
SUPPORTED_SPEC_VERSIONS = [
    "r0.6.1", "v1.1", "v1.2", "v1.3", "v1.4", "v1.5", "v1.6", "v1.7", "v1.8", "v1.9",
    "v1.10", "v1.11",
]  # fmt: skip


# Unstable feature flags that clients in use still read, each for a feature served here.
# Element Web checks e2e_cross_signing before offering cross-signing; matrix-js-sdk and
# matrix-rust-sdk check the ".stable" flags before using a feature that servers older than
# its spec version may lack. Flags for features not served here are left out, not false.
UNSTABLE_FEATURES = {
    "org.matrix.e2e_cross_signing": True,  # cross-signing keys and signatures
    "org.matrix.msc2285.stable": True,  # private read receipts (m.read.private)
    "org.matrix.msc3030": True,  # /timestamp_to_event
    "org.matrix.msc3440.stable": True,  # threads
    "org.matrix.msc3771": True,  # thread-aware read receipts
    "org.matrix.msc3773": True,  # per-thread notification counts
    "org.matrix.msc3827.stable": True,  # room_types filter on /publicRooms
    "org.matrix.msc3916.stable": True,  # authenticated media
    "uk.tcpip.msc4133.stable": True,  # extended profile fields
    "org.matrix.msc3814": True,  # dehydrated devices
    "org.matrix.msc3266": True,  # room summaries
    "uk.half-shot.msc2666.query_mutual_rooms": True,  # mutual rooms
    "org.matrix.simplified_msc3575": True,  # simplified sliding sync (Element X needs it)
}


def register(hs: HomeServer, router: Router) -> None:
    config = hs.config

    async def versions(request: MatrixRequest) -> tuple[int, Any]:
        return 200, {
            "versions": SUPPORTED_SPEC_VERSIONS,
            "unstable_features": UNSTABLE_FEATURES,
        }

    async def well_known_client(request: MatrixRequest) -> tuple[int, Any]:
        # Clients switch to the advertised base URL, so nothing is advertised until the
        # operator has said where the server really answers.
        if config.public_baseurl is None:
            raise not_found("No client discovery information is configured here")
        body: dict[str, Any] = {"m.homeserver": {"base_url": config.public_baseurl}}
        body.update(config.well_known.client_extra)
        return 200, body

    async def well_known_server(request: MatrixRequest) -> tuple[int, Any]:
        if not config.well_known.serve_server:
            raise not_found(".well-known/matrix/server is not served here")
        delegated = config.well_known.server_delegation
        if delegated is None:
            host = config.server_name
            delegated = host if ":" in host.rsplit("]", 1)[-1] else f"{host}:443"
        return 200, {"m.server": delegated}

    async def well_known_support(request: MatrixRequest) -> tuple[int, Any]:
        support = config.well_known
        if not support.support_contacts and not support.support_page:
            raise not_found("No support information is configured here")
        body: dict[str, Any] = {}
        if support.support_contacts:
            body["contacts"] = [
                {k: v for k, v in (("role", c.role), ("matrix_id", c.matrix_id),
                                   ("email_address", c.email_address)) if v}
                for c in support.support_contacts
            ]  # fmt: skip
        if support.support_page:
            body["support_page"] = support.support_page
        return 200, body

    async def capabilities(request: MatrixRequest) -> tuple[int, Any]:
        await hs.auth.get_user_by_req(request)
        return 200, {
            "capabilities": {
                "m.change_password": {"enabled": True},
                "m.set_displayname": {"enabled": True},
                "m.set_avatar_url": {"enabled": True},
                "m.3pid_changes": {"enabled": config.email.enabled},
                "m.get_login_token": {"enabled": config.sessions.login_token_enabled},
                "m.profile_fields": {"enabled": True},
                "m.room_versions": {
                    "default": config.rooms.default_room_version,
                    "available": {v: "stable" for v in KNOWN_ROOM_VERSIONS},
                },
            }
        }

    router.add("GET", "/_matrix/client/versions", versions, "versions")
    router.add("GET", "/.well-known/matrix/client", well_known_client, "well_known_client")
    router.add("GET", "/.well-known/matrix/server", well_known_server, "well_known_server")
    router.add("GET", "/.well-known/matrix/support", well_known_support, "well_known_support")
    router.add("GET", client_paths("/capabilities"), capabilities, "capabilities")
