"""Shared-secret registration (Synapse's /_synapse/admin/v1/register) over real HTTP."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable
from typing import Any

from tests.harness import PASSWORD, SHARED_SECRET, Client, ServerProcess

ADMIN_REGISTER = "/_synapse/admin/v1/register"
TOKENS = "/_synapse/admin/v1/registration_tokens"


def compute_mac(
    nonce: str, user: str, password: str, admin: bool, secret: str = SHARED_SECRET
) -> str:
    """HMAC-SHA1 over ``nonce NUL user NUL password NUL admin|notadmin``, computed independently."""
    message = b"\x00".join(
        [
            nonce.encode("utf-8"),
            user.encode("utf-8"),
            password.encode("utf-8"),
            b"admin" if admin else b"notadmin",
        ]
    )
    return hmac.new(secret.encode("utf-8"), message, hashlib.sha1).hexdigest()


def get_nonce(client: Client) -> str:
    resp = client.get(ADMIN_REGISTER, token=False)
    assert resp.status == 200, resp
    nonce = resp.body["nonce"]
    assert isinstance(nonce, str) and nonce
    return nonce


def shared_secret_register(
    server: ServerProcess,
    username: str | None = None,
    password: str = PASSWORD,
    admin: bool = False,
) -> Client:
    """Create an account with the shared secret and return a client using its token."""
    client = Client(server)
    username = username or "ss" + secrets.token_hex(4)
    nonce = get_nonce(client)
    resp = client.post(
        ADMIN_REGISTER,
        {
            "nonce": nonce,
            "username": username,
            "password": password,
            "admin": admin,
            "mac": compute_mac(nonce, username, password, admin),
        },
        token=False,
    )
    assert resp.status == 200, resp
    client.adopt(resp.body)
    return client


def _body(nonce: str, username: str, admin: bool = False, **extra: Any) -> dict[str, Any]:
    return {
        "nonce": nonce,
        "username": username,
        "password": PASSWORD,
        "admin": admin,
        "mac": compute_mac(nonce, username, PASSWORD, admin),
        **extra,
    }


def _available(client: Client, username: str) -> bool:
    resp = client.get("register/available", params={"username": username}, token=False)
    if resp.status == 200:
        assert resp.body == {"available": True}
        return True
    assert resp.status == 400 and resp.body["errcode"] == "M_USER_IN_USE", resp
    return False


def test_nonces_are_fresh(client: Client) -> None:
    first = get_nonce(client)
    second = get_nonce(client)
    assert first != second


def test_register_returns_working_token(client: Client) -> None:
    username = "ss" + secrets.token_hex(4)
    nonce = get_nonce(client)
    resp = client.post(ADMIN_REGISTER, _body(nonce, username), token=False)
    assert resp.status == 200, resp
    assert resp.body["user_id"] == f"@{username}:{client.server.server_name}"
    assert isinstance(resp.body["access_token"], str) and resp.body["access_token"]
    assert isinstance(resp.body["device_id"], str) and resp.body["device_id"]

    whoami = client.get("account/whoami", token=resp.body["access_token"])
    assert whoami.status == 200, whoami
    assert whoami.body["user_id"] == resp.body["user_id"]
    assert whoami.body["device_id"] == resp.body["device_id"]

    # The password given is the account's password.
    login = Client(client.server).login(username)
    assert login.status == 200, login
    assert login.body["user_id"] == resp.body["user_id"]

    # admin defaults to false: the admin API refuses this user.
    tokens = client.get(TOKENS, token=resp.body["access_token"])
    assert tokens.status == 403, tokens
    assert tokens.body["errcode"] == "M_FORBIDDEN"


def test_displayname_is_set(client: Client) -> None:
    username = "ss" + secrets.token_hex(4)
    nonce = get_nonce(client)
    resp = client.post(
        ADMIN_REGISTER, _body(nonce, username, displayname="Shared Secret User"), token=False
    )
    assert resp.status == 200, resp
    profile = client.get(f"profile/{resp.body['user_id']}/displayname", token=False)
    assert profile.status == 200, profile
    assert profile.body == {"displayname": "Shared Secret User"}


def test_wrong_mac_is_403_and_creates_nothing(client: Client) -> None:
    username = "ss" + secrets.token_hex(4)
    nonce = get_nonce(client)
    body = _body(nonce, username)
    body["mac"] = compute_mac(nonce, username, PASSWORD, False, secret="not-the-secret")
    resp = client.post(ADMIN_REGISTER, body, token=False)
    assert resp.status == 403, resp
    assert resp.body["errcode"] == "M_FORBIDDEN"
    assert _available(client, username)


def test_mac_binds_admin_flag(client: Client) -> None:
    """A MAC computed for a normal user cannot be used to create an admin."""
    username = "ss" + secrets.token_hex(4)
    nonce = get_nonce(client)
    body = _body(nonce, username, admin=False)
    body["admin"] = True
    resp = client.post(ADMIN_REGISTER, body, token=False)
    assert resp.status == 403, resp
    assert resp.body["errcode"] == "M_FORBIDDEN"
    assert _available(client, username)


def test_replayed_nonce_is_400(client: Client) -> None:
    nonce = get_nonce(client)
    first = client.post(ADMIN_REGISTER, _body(nonce, "ss" + secrets.token_hex(4)), token=False)
    assert first.status == 200, first

    other = "ss" + secrets.token_hex(4)
    replay = client.post(ADMIN_REGISTER, _body(nonce, other), token=False)
    assert replay.status == 400, replay
    assert replay.body["errcode"].startswith("M_")
    assert _available(client, other)


def test_unknown_nonce_is_400(client: Client) -> None:
    username = "ss" + secrets.token_hex(4)
    resp = client.post(ADMIN_REGISTER, _body("made-up-nonce", username), token=False)
    assert resp.status == 400, resp
    assert _available(client, username)


def test_failed_attempt_burns_the_nonce(client: Client) -> None:
    """A nonce is single-use even when the attempt fails, so MACs cannot be guessed on it."""
    username = "ss" + secrets.token_hex(4)
    nonce = get_nonce(client)
    bad = _body(nonce, username)
    bad["mac"] = "0" * 40
    assert client.post(ADMIN_REGISTER, bad, token=False).status == 403
    retry = client.post(ADMIN_REGISTER, _body(nonce, username), token=False)
    assert retry.status == 400, retry
    assert _available(client, username)


def test_admin_user_can_use_admin_api(server: ServerProcess) -> None:
    admin = shared_secret_register(server, admin=True)
    resp = admin.post(TOKENS + "/new", {"uses_allowed": 2})
    assert resp.status == 200, resp
    token = resp.body["token"]
    assert isinstance(token, str) and token
    assert resp.body["uses_allowed"] == 2

    listed = admin.get(TOKENS)
    assert listed.status == 200, listed
    assert token in [t["token"] for t in listed.body["registration_tokens"]]

    fetched = admin.get(f"{TOKENS}/{token}")
    assert fetched.status == 200, fetched
    assert fetched.body["token"] == token
    assert fetched.body["completed"] == 0


def test_disabled_without_shared_secret(server_factory: Callable[..., ServerProcess]) -> None:
    server = server_factory({"registration": {"shared_secret": None}})
    client = Client(server)
    resp = client.get(ADMIN_REGISTER, token=False)
    assert resp.status == 400, resp
    assert "nonce" not in resp.body

    username = "ss" + secrets.token_hex(4)
    resp = client.post(ADMIN_REGISTER, _body("any-nonce", username), token=False)
    assert resp.status == 400, resp
    assert "access_token" not in resp.body
    assert _available(client, username)
