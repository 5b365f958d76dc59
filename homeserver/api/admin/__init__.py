"""Admin API servlets, on Synapse's paths and shapes so that existing admin tools work."""

from __future__ import annotations

from typing import TYPE_CHECKING

from homeserver.http.server import Router

if TYPE_CHECKING:
    from homeserver.server import HomeServer


def register_admin_servlets(hs: HomeServer, router: Router) -> None:
    from homeserver.api.admin import media, register, registration_tokens, rooms, server, users

    register.register(hs, router)
    users.register(hs, router)
    rooms.register(hs, router)
    server.register(hs, router)
    registration_tokens.register(hs, router)
    media.register(hs, router)
