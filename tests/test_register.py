"""POST /register with user-interactive auth, availability, tokens and rate limiting."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any

from tests.harness import PASSWORD, Client, Response, ServerProcess, new_user
from tests.test_shared_secret_registration import shared_secret_register

DUMMY = "m.login.dummy"
TOKEN_STAGE = "m.login.registration_token"
TOKENS = "/_synapse/admin/v1/registration_tokens"
VALIDITY = "/_matrix/client/v1/register/m.login.registration_token/validity"


def _name(prefix: str = "reg") -> str:
    return prefix + secrets.token_hex(4)


def _stages(body: dict[str, Any]) -> list[list[str]]:
    return [flow["stages"] for flow in body["flows"]]


def register_with_dummy(client: Client, body: dict[str, Any]) -> Response:
    """Run the whole dummy flow: answer the 401 challenge if there is one, return the end."""
    first = client.post("register", body, token=False)
    if first.status != 401:
        return first
    assert [DUMMY] in _stages(first.body), first
    return client.post(
        "register", {**body, "auth": {"type": DUMMY, "session": first.body["session"]}}, token=False
    )


def is_available(client: Client, username: str) -> bool:
    resp = client.get("register/available", params={"username": username}, token=False)
    if resp.status == 200:
        assert resp.body == {"available": True}
        return True
    assert resp.status == 400 and resp.body["errcode"] == "M_USER_IN_USE", resp
    return False


def test_dummy_flow(client: Client) -> None:
    username = _name()
    body = {"username": username, "password": PASSWORD, "initial_device_display_name": "Phone"}
    first = client.post("register", body, token=False)
    assert first.status == 401, first
    session = first.body["session"]
    assert isinstance(session, str) and session
    assert [DUMMY] in _stages(first.body)
    assert "access_token" not in first.body

    second = client.post("register", {**body, "auth": {"type": DUMMY, "session": session}})
    assert second.status == 200, second
    assert second.body["user_id"] == f"@{username}:{client.server.server_name}"
    token = second.body["access_token"]
    device_id = second.body["device_id"]
    assert isinstance(token, str) and token
    assert isinstance(device_id, str) and device_id

    whoami = client.get("account/whoami", token=token)
    assert whoami.status == 200, whoami
    assert whoami.body["user_id"] == second.body["user_id"]
    assert whoami.body["device_id"] == device_id

    devices = client.get("devices", token=token)
    assert devices.status == 200, devices
    assert [(d["device_id"], d["display_name"]) for d in devices.body["devices"]] == [
        (device_id, "Phone")
    ]

    # The password registered with is the one that logs in.
    assert Client(client.server).login(username).status == 200


def test_requested_device_id_is_used(client: Client) -> None:
    resp = register_with_dummy(
        client, {"username": _name(), "password": PASSWORD, "device_id": "MYDEVICE"}
    )
    assert resp.status == 200, resp
    assert resp.body["device_id"] == "MYDEVICE"


def test_username_taken(client: Client, alice: Client) -> None:
    assert alice.user_id is not None
    localpart = alice.user_id[1:].split(":")[0]
    resp = client.post("register", {"username": localpart, "password": PASSWORD}, token=False)
    assert resp.status == 400, resp
    assert resp.body["errcode"] == "M_USER_IN_USE"


def test_username_taken_case_insensitively(client: Client) -> None:
    localpart = _name("alice")
    new_user(client.server, localpart)
    for variant in (localpart.capitalize(), localpart.upper()):
        resp = register_with_dummy(client, {"username": variant, "password": PASSWORD})
        assert resp.status == 400, (variant, resp)
        assert resp.body["errcode"] == "M_USER_IN_USE", variant
        assert not is_available(client, variant)


def test_invalid_username(client: Client) -> None:
    for username in ("has space", "colon:inside", "@at", "snow\u2603man", "x" * 300):
        resp = register_with_dummy(client, {"username": username, "password": PASSWORD})
        assert resp.status == 400, (username, resp)
        assert resp.body["errcode"] == "M_INVALID_USERNAME", username

        avail = client.get("register/available", params={"username": username}, token=False)
        assert avail.status == 400, (username, avail)
        assert avail.body["errcode"] == "M_INVALID_USERNAME", username


def test_available(client: Client) -> None:
    username = _name()
    resp = client.get("register/available", params={"username": username}, token=False)
    assert resp.status == 200, resp
    assert resp.body == {"available": True}

    new_user(client.server, username)
    resp = client.get("register/available", params={"username": username}, token=False)
    assert resp.status == 400, resp
    assert resp.body["errcode"] == "M_USER_IN_USE"


def test_inhibit_login(client: Client) -> None:
    username = _name()
    resp = register_with_dummy(
        client, {"username": username, "password": PASSWORD, "inhibit_login": True}
    )
    assert resp.status == 200, resp
    assert resp.body["user_id"] == f"@{username}:{client.server.server_name}"
    assert "access_token" not in resp.body
    assert "device_id" not in resp.body
    # The account exists and can log in, with no device left over from registration.
    other = Client(client.server)
    assert other.login(username).status == 200
    devices = other.get("devices")
    assert devices.status == 200, devices
    assert [d["device_id"] for d in devices.body["devices"]] == [other.device_id]


def test_guest_registration_forbidden(client: Client) -> None:
    resp = client.post("register", {}, params={"kind": "guest"}, token=False)
    assert resp.status == 403, resp
    assert resp.body["errcode"] == "M_GUEST_ACCESS_FORBIDDEN"


def test_registration_disabled(server_factory: Callable[..., ServerProcess]) -> None:
    server = server_factory({"registration": {"enabled": False}})
    client = Client(server)
    username = _name()
    resp = client.post("register", {"username": username, "password": PASSWORD}, token=False)
    assert resp.status == 403, resp
    assert resp.body["errcode"] == "M_FORBIDDEN"
    assert "access_token" not in resp.body
    # A client that goes straight to the auth stage is refused too.
    resp = client.post(
        "register",
        {"username": username, "password": PASSWORD, "auth": {"type": DUMMY}},
        token=False,
    )
    assert resp.status == 403, resp
    assert resp.body["errcode"] == "M_FORBIDDEN"


def test_token_validity_forbidden_when_registration_disabled(
    server_factory: Callable[..., ServerProcess],
) -> None:
    """Spec: 403 when "the homeserver does not permit registration"."""
    server = server_factory({"registration": {"enabled": False, "requires_token": True}})
    resp = Client(server).get(VALIDITY, params={"token": "anything"}, token=False)
    assert resp.status == 403, resp
    assert resp.body["errcode"] == "M_FORBIDDEN"


def test_weak_password(client: Client) -> None:
    username = _name()
    resp = register_with_dummy(client, {"username": username, "password": "short"})
    assert resp.status == 400, resp
    assert resp.body["errcode"] == "M_WEAK_PASSWORD"
    assert is_available(client, username)


def test_password_missing_after_auth(client: Client) -> None:
    username = _name()
    first = client.post("register", {"username": username}, token=False)
    assert first.status == 401, first
    resp = client.post(
        "register",
        {"username": username, "auth": {"type": DUMMY, "session": first.body["session"]}},
        token=False,
    )
    assert resp.status == 400, resp
    assert resp.body["errcode"] == "M_MISSING_PARAM"
    assert is_available(client, username)


def test_registration_tokens(server_factory: Callable[..., ServerProcess]) -> None:
    server = server_factory({"registration": {"requires_token": True}})
    client = Client(server)
    admin = shared_secret_register(server, admin=True)

    # The only flow offered is the token stage; the dummy stage is not accepted.
    username = _name()
    body = {"username": username, "password": PASSWORD}
    first = client.post("register", body, token=False)
    assert first.status == 401, first
    stages = _stages(first.body)
    assert stages and all(TOKEN_STAGE in flow for flow in stages), stages
    dummy = client.post(
        "register", {**body, "auth": {"type": DUMMY, "session": first.body["session"]}}
    )
    assert dummy.status == 401, dummy
    assert "access_token" not in dummy.body

    created = admin.post(TOKENS + "/new", {"uses_allowed": 1})
    assert created.status == 200, created
    token = created.body["token"]
    assert isinstance(token, str) and token
    assert created.body["uses_allowed"] == 1
    assert created.body["completed"] == 0

    valid = client.get(VALIDITY, params={"token": token}, token=False)
    assert valid.status == 200, valid
    assert valid.body == {"valid": True}
    unknown = client.get(VALIDITY, params={"token": "no-such-token"}, token=False)
    assert unknown.status == 200, unknown
    assert unknown.body == {"valid": False}

    # The first user spends the token.
    first = client.post("register", body, token=False)
    assert first.status == 401, first
    auth = {"type": TOKEN_STAGE, "token": token, "session": first.body["session"]}
    done = client.post("register", {**body, "auth": auth}, token=False)
    assert done.status == 200, done
    assert done.body["user_id"] == f"@{username}:{server.server_name}"
    assert client.get("account/whoami", token=done.body["access_token"]).status == 200

    spent = client.get(VALIDITY, params={"token": token}, token=False)
    assert spent.status == 200, spent
    assert spent.body == {"valid": False}
    record = admin.get(f"{TOKENS}/{token}")
    assert record.status == 200, record
    assert record.body["completed"] == 1

    # A second registration with the same token fails at the token stage.
    other = _name()
    other_body = {"username": other, "password": PASSWORD}
    first = client.post("register", other_body, token=False)
    assert first.status == 401, first
    auth = {"type": TOKEN_STAGE, "token": token, "session": first.body["session"]}
    refused = client.post("register", {**other_body, "auth": auth}, token=False)
    assert refused.status == 401, refused
    assert refused.body["errcode"] == "M_FORBIDDEN"
    assert "flows" in refused.body
    assert "access_token" not in refused.body
    assert is_available(client, other)

    # The spent token is listed as invalid; raising its limit (PUT) makes it usable again.
    valid_tokens = admin.get(TOKENS, params={"valid": "true"}).body["registration_tokens"]
    invalid_tokens = admin.get(TOKENS, params={"valid": "false"}).body["registration_tokens"]
    assert token not in [t["token"] for t in valid_tokens]
    assert token in [t["token"] for t in invalid_tokens]
    raised = admin.put(f"{TOKENS}/{token}", {"uses_allowed": 2})
    assert raised.status == 200 and raised.body["uses_allowed"] == 2, raised
    assert client.get(VALIDITY, params={"token": token}, token=False).body == {"valid": True}
    assert admin.put(f"{TOKENS}/{token}", {"expiry_time": 1}).body["errcode"] == "M_INVALID_PARAM"
    assert admin.put(f"{TOKENS}/{token}", {"uses_allowed": "x"}).status == 400
    assert admin.put(f"{TOKENS}/nope", {"uses_allowed": None}).status == 404


def test_non_admin_cannot_use_token_api(client: Client, alice: Client) -> None:
    for resp in (alice.get(TOKENS), alice.post(TOKENS + "/new", {"uses_allowed": 1})):
        assert resp.status == 403, resp
        assert resp.body["errcode"] == "M_FORBIDDEN"
    resp = client.post(TOKENS + "/new", {}, token=False)
    assert resp.status == 401, resp
    assert resp.body["errcode"] == "M_MISSING_TOKEN"


def test_registration_rate_limited(server_factory: Callable[..., ServerProcess]) -> None:
    server = server_factory(
        {
            "rate_limiting": {
                "enabled": True,
                "registration": {"per_second": 0.001, "burst_count": 1},
            }
        }
    )
    client = Client(server)
    # One registration is allowed: the 401 challenge round-trip is part of it.
    resp = register_with_dummy(client, {"username": _name(), "password": PASSWORD})
    assert resp.status == 200, resp

    # The next attempt from the same address is refused.
    resp = client.post("register", {"username": _name(), "password": PASSWORD}, token=False)
    assert resp.status == 429, resp
    assert resp.body["errcode"] == "M_LIMIT_EXCEEDED"
    retry_after_ms = resp.body["retry_after_ms"]
    assert isinstance(retry_after_ms, int) and not isinstance(retry_after_ms, bool)
    assert 0 < retry_after_ms <= 1_000_001
    assert int(resp.headers["Retry-After"]) >= 1
