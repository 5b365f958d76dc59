"""Servlets: parse, authorise, call a service. One module per spec module."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from homeserver.http.server import Router

if TYPE_CHECKING:
    from homeserver.server import HomeServer


def register_servlets(hs: HomeServer, router: Router, resources: Sequence[str]) -> None:
    from homeserver.api import media
    from homeserver.api.admin import register_admin_servlets
    from homeserver.api.client import register_client_servlets
    from keybackup import servlets as keybackup_servlets

    if "client" in resources:
        from homeserver.api import consent

        register_client_servlets(hs, router)
        keybackup_servlets.register(hs, router)
        consent.register(hs, router)
    if "client" in resources or "media" in resources:
        media.register(hs, router)
    if "admin" in resources:
        register_admin_servlets(hs, router)
    if "federation" in resources and hs.config.federation.enabled:
        from homeserver.api.federation import register_federation_servlets

        register_federation_servlets(hs, router)
