"""Client-server API servlets."""

from __future__ import annotations

from typing import TYPE_CHECKING

from homeserver.http.server import Router

if TYPE_CHECKING:
    from homeserver.server import HomeServer


def register_client_servlets(hs: HomeServer, router: Router) -> None:
    from homeserver.api.client import (
        account,
        account_data,
        dehydrated_devices,
        devices,
        discovery,
        discovery_extras,
        keys,
        login,
        privacy,
        profile,
        push,
        register,
        rooms,
        sync,
    )

    for module in (
        discovery,
        discovery_extras,
        keys,
        register,
        login,
        account,
        devices,
        dehydrated_devices,
        profile,
        push,
        account_data,
        rooms,
        sync,
        privacy,
    ):
        module.register(hs, router)
