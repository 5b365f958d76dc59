"""Logging in (password, identifiers, devices), whoami, logging out, login rate limits."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any

from tests.harness import PASSWORD, Client, Response, ServerProcess, new_user


def _localpart(client: Client) -> str:
    assert client.user_id is not None
    return client.user_id[1:].split(":")[0]


def _password_login(client: Client, **fields: Any) -> Response:
    return client.post("login", {"type": "m.login.password", **fields}, token=False)


def _assert_session(client: Client, resp: Response, user_id: str) -> None:
    assert resp.status == 200, resp
    assert resp.body["user_id"] == user_id
    assert isinstance(resp.body["access_token"], str) and resp.body["access_token"]
    assert isinstance(resp.body["device_id"], str) and resp.body["device_id"]
    whoami = client.get("account/whoami", token=resp.body["access_token"])
    assert whoami.status == 200, whoami
    assert whoami.body["user_id"] == user_id
    assert whoami.body["device_id"] == resp.body["device_id"]


def _device_ids(client: Client) -> list[str]:
    resp = client.get("devices")
    assert resp.status == 200, resp
    return [d["device_id"] for d in resp.body["devices"]]


def test_login_flows(client: Client) -> None:
    resp = client.get("login", token=False)
    assert resp.status == 200, resp
    assert "m.login.password" in [flow["type"] for flow in resp.body["flows"]]


def test_login_with_localpart(client: Client, alice: Client) -> None:
    resp = _password_login(
        client,
        identifier={"type": "m.id.user", "user": _localpart(alice)},
        password=PASSWORD,
    )
    _assert_session(client, resp, alice.user_id or "")
    # A new login is a new device with its own token.
    assert resp.body["device_id"] != alice.device_id
    assert resp.body["access_token"] != alice.token


def test_login_with_full_user_id(client: Client, alice: Client) -> None:
    resp = _password_login(
        client, identifier={"type": "m.id.user", "user": alice.user_id}, password=PASSWORD
    )
    _assert_session(client, resp, alice.user_id or "")


def test_login_with_uppercase_localpart(client: Client, alice: Client) -> None:
    upper = _localpart(alice).upper()
    resp = _password_login(
        client, identifier={"type": "m.id.user", "user": upper}, password=PASSWORD
    )
    _assert_session(client, resp, alice.user_id or "")

    full = f"@{upper}:{client.server.server_name}"
    resp = _password_login(
        client, identifier={"type": "m.id.user", "user": full}, password=PASSWORD
    )
    _assert_session(client, resp, alice.user_id or "")


def test_login_with_legacy_user_field(client: Client, alice: Client) -> None:
    resp = _password_login(client, user=_localpart(alice), password=PASSWORD)
    _assert_session(client, resp, alice.user_id or "")
    resp = _password_login(client, user=alice.user_id, password=PASSWORD)
    _assert_session(client, resp, alice.user_id or "")


def test_wrong_password_and_unknown_user_look_the_same(client: Client, alice: Client) -> None:
    wrong = _password_login(
        client,
        identifier={"type": "m.id.user", "user": alice.user_id},
        password="not the password",
    )
    assert wrong.status == 403, wrong
    assert wrong.body["errcode"] == "M_FORBIDDEN"
    assert "access_token" not in wrong.body

    unknown = _password_login(
        client,
        identifier={"type": "m.id.user", "user": "nobody" + secrets.token_hex(4)},
        password=PASSWORD,
    )
    assert unknown.status == 403, unknown
    assert unknown.body["errcode"] == wrong.body["errcode"] == "M_FORBIDDEN"


def test_unknown_login_type(client: Client, alice: Client) -> None:
    resp = client.post(
        "login",
        {
            "type": "m.login.bogus",
            "identifier": {"type": "m.id.user", "user": alice.user_id},
            "password": PASSWORD,
        },
        token=False,
    )
    assert resp.status == 400, resp
    assert resp.body["errcode"].startswith("M_")
    assert "access_token" not in resp.body


def test_device_id_reuse(client: Client, alice: Client) -> None:
    device_id = "DEV" + secrets.token_hex(4).upper()
    first = alice.login(alice.user_id or "", device_id=device_id, initial_device_display_name="One")
    assert first.status == 200, first
    assert first.body["device_id"] == device_id
    second = Client(client.server)
    resp = second.login(alice.user_id or "", device_id=device_id, initial_device_display_name="Two")
    assert resp.status == 200, resp
    assert resp.body["device_id"] == device_id

    # The newest token is valid and belongs to the same device.
    whoami = second.get("account/whoami")
    assert whoami.status == 200, whoami
    assert whoami.body["device_id"] == device_id

    devices = second.get("devices")
    assert devices.status == 200, devices
    matching = [d for d in devices.body["devices"] if d["device_id"] == device_id]
    assert len(matching) == 1, devices.body
    # initial_device_display_name is ignored when the device already exists.
    assert matching[0]["display_name"] == "One"


def test_whoami(alice: Client) -> None:
    resp = alice.get("account/whoami")
    assert resp.status == 200, resp
    assert resp.body["user_id"] == alice.user_id
    assert resp.body["device_id"] == alice.device_id
    assert resp.body["is_guest"] is False


def test_logout_revokes_token_and_device(server: ServerProcess, alice: Client) -> None:
    other = Client(server)
    assert other.login(alice.user_id or "").status == 200
    assert other.device_id in _device_ids(alice)

    resp = other.post("logout", {})
    assert resp.status == 200, resp
    gone = other.get("account/whoami")
    assert gone.status == 401, gone
    assert gone.body["errcode"] == "M_UNKNOWN_TOKEN"

    # The other session is untouched; the logged-out device is gone.
    assert alice.get("account/whoami").status == 200
    assert _device_ids(alice) == [alice.device_id]


def test_logout_all(server: ServerProcess) -> None:
    first = new_user(server)
    second = Client(server)
    assert second.login(first.user_id or "").status == 200
    assert len(_device_ids(first)) == 2

    resp = second.post("logout/all", {})
    assert resp.status == 200, resp
    for session in (first, second):
        gone = session.get("account/whoami")
        assert gone.status == 401, gone
        assert gone.body["errcode"] == "M_UNKNOWN_TOKEN"

    # Logging in again works and starts from an empty device list.
    third = Client(server)
    assert third.login(first.user_id or "").status == 200
    assert _device_ids(third) == [third.device_id]


def test_login_rate_limits(server_factory: Callable[..., ServerProcess]) -> None:
    generous = {"per_second": 100, "burst_count": 100}
    tiny = {"per_second": 0.001, "burst_count": 1}
    server = server_factory(
        {
            "rate_limiting": {
                "enabled": True,
                "registration": generous,
                "login_address": tiny,
                "login_account": generous,
                "login_failed_attempts": generous,
            }
        }
    )
    user = new_user(server)
    assert Client(server).login(user.user_id or "").status == 200
    resp = Client(server).login(user.user_id or "")
    assert resp.status == 429, resp
    assert resp.body["errcode"] == "M_LIMIT_EXCEEDED"
    assert isinstance(resp.body["retry_after_ms"], int)
    assert resp.body["retry_after_ms"] > 0
    assert int(resp.headers["Retry-After"]) >= 1


def test_login_account_rate_limit(server_factory: Callable[..., ServerProcess]) -> None:
    generous = {"per_second": 100, "burst_count": 100}
    server = server_factory(
        {
            "rate_limiting": {
                "enabled": True,
                "registration": generous,
                "login_address": generous,
                "login_account": {"per_second": 0.001, "burst_count": 1},
                "login_failed_attempts": generous,
            }
        }
    )
    limited, unaffected = new_user(server), new_user(server)
    assert Client(server).login(limited.user_id or "").status == 200
    resp = Client(server).login(limited.user_id or "")
    assert resp.status == 429, resp
    assert resp.body["errcode"] == "M_LIMIT_EXCEEDED"
    assert isinstance(resp.body["retry_after_ms"], int)
    # The limit is per account: someone else from the same address can still log in.
    assert Client(server).login(unaffected.user_id or "").status == 200


def test_passwords_are_stored_only_as_bcrypt_hashes(server: ServerProcess) -> None:
    """The policy's promise: a one-way hash, never the password itself."""
    from tests.harness import db_rows

    user = new_user(server)
    rows = db_rows(server, "SELECT password_hash FROM users WHERE user_id = ?", (user.user_id,))
    stored = str(rows[0][0])
    assert stored.startswith("$2b$12$") or stored.startswith("$2b$04$"), stored[:7]
    assert PASSWORD not in stored and len(stored) == 60
