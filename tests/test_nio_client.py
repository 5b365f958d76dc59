"""A real client library, matrix-nio, against the server: register, login, devices, logout."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator

import nio
import pytest

from tests.harness import PASSWORD, ServerProcess


@pytest.fixture
async def nio_client(server: ServerProcess) -> AsyncIterator[nio.AsyncClient]:
    client = nio.AsyncClient(server.base_url, "")
    yield client
    await client.close()


async def test_nio_register_login_devices_whoami_logout(
    server: ServerProcess, nio_client: nio.AsyncClient
) -> None:
    username = "nio" + secrets.token_hex(4)
    registered = await nio_client.register(username, PASSWORD, device_name="nio register")
    assert isinstance(registered, nio.RegisterResponse), registered
    assert registered.user_id == f"@{username}:{server.server_name}"

    client = nio.AsyncClient(server.base_url, registered.user_id)
    try:
        login = await client.login(PASSWORD, device_name="nio laptop")
        assert isinstance(login, nio.LoginResponse), login
        assert login.user_id == registered.user_id
        assert login.device_id
        assert login.device_id != registered.device_id
        assert client.access_token == login.access_token

        devices = await client.devices()
        assert isinstance(devices, nio.DevicesResponse), devices
        by_id = {d.id: d for d in devices.devices}
        assert login.device_id in by_id
        assert registered.device_id in by_id
        assert by_id[login.device_id].display_name == "nio laptop"
        assert by_id[login.device_id].last_seen_ip == "127.0.0.1"

        whoami = await client.whoami()
        assert isinstance(whoami, nio.WhoamiResponse), whoami
        assert whoami.user_id == registered.user_id
        assert whoami.device_id == login.device_id

        logout = await client.logout()
        assert isinstance(logout, nio.LogoutResponse), logout
    finally:
        await client.close()

    # The logged-out token no longer works, and the device is gone from the list.
    assert nio_client.access_token == registered.access_token
    stale = nio.AsyncClient(server.base_url, registered.user_id)
    stale.access_token = login.access_token
    stale.user_id = registered.user_id
    try:
        assert isinstance(await stale.whoami(), nio.WhoamiError)
    finally:
        await stale.close()
    devices = await nio_client.devices()
    assert isinstance(devices, nio.DevicesResponse), devices
    ids = {d.id for d in devices.devices}
    assert login.device_id not in ids
    assert registered.device_id in ids


async def test_nio_wrong_password_is_rejected(server: ServerProcess) -> None:
    username = "nio" + secrets.token_hex(4)
    first = nio.AsyncClient(server.base_url, "")
    try:
        assert isinstance(await first.register(username, PASSWORD), nio.RegisterResponse)
    finally:
        await first.close()
    client = nio.AsyncClient(server.base_url, f"@{username}:{server.server_name}")
    try:
        resp = await client.login("not the password")
        assert isinstance(resp, nio.LoginError), resp
        assert resp.status_code == "M_FORBIDDEN"
        assert client.access_token == ""
    finally:
        await client.close()
