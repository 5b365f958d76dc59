"""Refresh tokens: only for clients that ask, access tokens that expire, each refresh
token good until the pair it bought is used (so a lost answer costs nothing)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from tests.harness import PASSWORD, Client, ServerProcess, new_user


def login(client: Client, user_id: str, **extra: Any) -> dict[str, Any]:
    resp = client.post("login", {"type": "m.login.password",
                                 "identifier": {"type": "m.id.user", "user": user_id},
                                 "password": PASSWORD, **extra}, token=False)  # fmt: skip
    assert resp.status == 200, resp
    return dict(resp.body)


def whoami(client: Client, token: str) -> Any:
    return client.get("account/whoami", token=token)


def refresh(client: Client, refresh_token: str) -> Any:
    return client.post("refresh", {"refresh_token": refresh_token}, token=False)


def test_only_clients_that_ask_get_refresh_tokens(alice: Client) -> None:
    plain = login(alice, alice.user_id or "")
    assert "refresh_token" not in plain and "expires_in_ms" not in plain
    refreshable = login(alice, alice.user_id or "", refresh_token=True)
    assert refreshable["refresh_token"].startswith("syr_")
    assert refreshable["expires_in_ms"] == 300_000  # the default five minutes
    assert whoami(alice, refreshable["access_token"]).status == 200


def test_expiry_refresh_and_the_grace_for_a_lost_answer(
    server_factory: Callable[..., ServerProcess],
) -> None:
    server = server_factory({"sessions": {"refreshable_access_token_lifetime": "1s"}})
    user = new_user(server)
    session = login(user, user.user_id or "", refresh_token=True)
    assert session["expires_in_ms"] == 1000
    time.sleep(1.2)
    expired = whoami(user, session["access_token"])
    assert expired.status == 401
    assert expired.body == {"errcode": "M_UNKNOWN_TOKEN", "error": "Access token expired",
                            "soft_logout": True}  # fmt: skip

    lost = refresh(user, session["refresh_token"])  # this answer never reaches the client
    assert lost.status == 200, lost
    again = refresh(user, session["refresh_token"])  # so it asks again with the old one
    assert again.status == 200, again
    assert whoami(user, lost.body["access_token"]).status == 401  # the lost pair is void
    assert refresh(user, lost.body["refresh_token"]).status == 401
    assert whoami(user, again.body["access_token"]).status == 200
    # The new pair has been used: the old refresh token is spent for good.
    spent = refresh(user, session["refresh_token"])
    assert spent.status == 401 and spent.body["soft_logout"] is True
    # And the chain goes on.
    later = refresh(user, again.body["refresh_token"])
    assert later.status == 200 and whoami(user, later.body["access_token"]).status == 200


def test_register_with_refresh_and_logout_ends_it(client: Client) -> None:
    body = {"username": "refresher" + str(int(time.time() * 1000) % 10**8),
            "password": PASSWORD, "refresh_token": True}  # fmt: skip
    first = client.post("register", body, token=False)
    body["auth"] = {"type": "m.login.dummy", "session": first.body["session"]}
    resp = client.post("register", body, token=False)
    assert resp.status == 200, resp
    assert "refresh_token" in resp.body and resp.body["expires_in_ms"] > 0
    assert client.post("logout", {}, token=resp.body["access_token"]).status == 200
    assert refresh(client, resp.body["refresh_token"]).status == 401


def test_refresh_needs_a_string(client: Client) -> None:
    for body in ({}, {"refresh_token": 5}):
        assert client.post("refresh", body, token=False).status == 400
    assert refresh(client, "syr_nonsense").status == 401


def test_login_token_signs_in_a_new_device_once(alice: Client, client: Client) -> None:
    flows = client.get("login", token=False).body["flows"]
    assert {"type": "m.login.token", "get_login_token": True} in flows
    caps = alice.get("capabilities").body["capabilities"]
    assert caps["m.get_login_token"] == {"enabled": True}
    challenge = alice.post("/_matrix/client/v1/login/get_token", {})
    assert challenge.status == 401 and "session" in challenge.body
    resp = alice.post("/_matrix/client/v1/login/get_token",
                      {"auth": alice.password_auth(session=challenge.body["session"])})  # fmt: skip
    assert resp.status == 200, resp
    assert 0 < resp.body["expires_in_ms"] <= 120_000
    body = {"type": "m.login.token", "token": resp.body["login_token"]}
    first = client.post("login", body, token=False)
    assert first.status == 200, first
    assert first.body["user_id"] == alice.user_id
    assert first.body["device_id"] != alice.device_id
    assert whoami(client, first.body["access_token"]).body["user_id"] == alice.user_id
    replay = client.post("login", body, token=False)
    assert replay.status == 403 and replay.body["errcode"] == "M_FORBIDDEN"


def test_login_tokens_expire_and_can_be_switched_off(
    server_factory: Callable[..., ServerProcess],
) -> None:
    server = server_factory({"sessions": {"login_token_lifetime": "1s"}})
    user = new_user(server)
    challenge = user.post("/_matrix/client/v1/login/get_token", {})
    token = user.post("/_matrix/client/v1/login/get_token",
                      {"auth": user.password_auth(session=challenge.body["session"])})  # fmt: skip
    time.sleep(1.2)
    late = user.post("login", {"type": "m.login.token", "token": token.body["login_token"]},
                     token=False)  # fmt: skip
    assert late.status == 403
    off = server_factory({"sessions": {"login_token_enabled": False}})
    other = new_user(off)
    assert other.post("/_matrix/client/v1/login/get_token", {}).status == 404
    assert other.get("capabilities").body["capabilities"]["m.get_login_token"] == {"enabled": False}
