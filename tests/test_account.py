"""Password changes, deactivation, UIA session scoping and whois."""

from __future__ import annotations

import time

from tests.harness import PASSWORD, Client, ServerProcess

NEW_PASSWORD = "a brand new password"


def _localpart(client: Client) -> str:
    assert client.user_id is not None
    return client.user_id[1:].split(":")[0]


def _second_session(server: ServerProcess, user: Client) -> Client:
    other = Client(server)
    resp = other.login(user.user_id or "")
    assert resp.status == 200, resp
    return other


def _assert_revoked(client: Client) -> None:
    resp = client.get("account/whoami")
    assert resp.status == 401, resp
    assert resp.body["errcode"] == "M_UNKNOWN_TOKEN"


def _password_stages(body: dict[str, object]) -> list[list[str]]:
    flows = body["flows"]
    assert isinstance(flows, list)
    return [flow["stages"] for flow in flows]


def test_change_password(server: ServerProcess, alice: Client) -> None:
    first = alice.post("account/password", {"new_password": NEW_PASSWORD})
    assert first.status == 401, first
    assert ["m.login.password"] in _password_stages(first.body)
    session = first.body["session"]
    assert isinstance(session, str) and session

    wrong = alice.post(
        "account/password",
        {"new_password": NEW_PASSWORD, "auth": alice.password_auth("wrong password", session)},
    )
    assert wrong.status == 401, wrong
    assert wrong.body["errcode"] == "M_FORBIDDEN"
    assert ["m.login.password"] in _password_stages(wrong.body)
    # The failed attempt changed nothing.
    assert Client(server).login(alice.user_id or "").status == 200

    ok = alice.post(
        "account/password",
        {"new_password": NEW_PASSWORD, "auth": alice.password_auth(PASSWORD, session)},
    )
    assert ok.status == 200, ok

    old = Client(server).login(alice.user_id or "", PASSWORD)
    assert old.status == 403, old
    assert old.body["errcode"] == "M_FORBIDDEN"
    new = Client(server).login(alice.user_id or "", NEW_PASSWORD)
    assert new.status == 200, new


def test_change_password_in_one_step(alice: Client) -> None:
    """Auth without a session (the password stage alone completes the flow) is accepted."""
    resp = alice.post(
        "account/password", {"new_password": NEW_PASSWORD, "auth": alice.password_auth()}
    )
    assert resp.status == 200, resp
    assert Client(alice.server).login(alice.user_id or "", NEW_PASSWORD).status == 200


def test_change_password_logs_out_other_devices(server: ServerProcess, alice: Client) -> None:
    others = [_second_session(server, alice), _second_session(server, alice)]
    resp = alice.post(
        "account/password", {"new_password": NEW_PASSWORD, "auth": alice.password_auth()}
    )
    assert resp.status == 200, resp

    for other in others:
        _assert_revoked(other)
    whoami = alice.get("account/whoami")
    assert whoami.status == 200, whoami
    assert whoami.body["device_id"] == alice.device_id
    devices = alice.get("devices")
    assert devices.status == 200, devices
    assert [d["device_id"] for d in devices.body["devices"]] == [alice.device_id]


def test_change_password_can_keep_other_devices(server: ServerProcess, alice: Client) -> None:
    other = _second_session(server, alice)
    resp = alice.post(
        "account/password",
        {
            "new_password": NEW_PASSWORD,
            "logout_devices": False,
            "auth": alice.password_auth(),
        },
    )
    assert resp.status == 200, resp
    assert other.get("account/whoami").status == 200
    assert alice.get("account/whoami").status == 200
    devices = alice.get("devices")
    assert devices.status == 200, devices
    assert sorted(d["device_id"] for d in devices.body["devices"]) == sorted(
        [alice.device_id, other.device_id]
    )


def test_weak_new_password_is_refused(server: ServerProcess, alice: Client) -> None:
    resp = alice.post("account/password", {"new_password": "short", "auth": alice.password_auth()})
    assert resp.status == 400, resp
    assert resp.body["errcode"] == "M_WEAK_PASSWORD"
    assert Client(server).login(alice.user_id or "", PASSWORD).status == 200


def test_deactivate(server: ServerProcess, alice: Client) -> None:
    set_name = alice.put(f"profile/{alice.user_id}/displayname", {"displayname": "Alice A."})
    assert set_name.status == 200, set_name
    other = _second_session(server, alice)

    first = alice.post("account/deactivate", {})
    assert first.status == 401, first
    assert ["m.login.password"] in _password_stages(first.body)
    session = first.body["session"]

    wrong = alice.post(
        "account/deactivate", {"auth": alice.password_auth("wrong password", session)}
    )
    assert wrong.status == 401, wrong
    assert wrong.body["errcode"] == "M_FORBIDDEN"
    assert alice.get("account/whoami").status == 200

    resp = alice.post("account/deactivate", {"auth": alice.password_auth(PASSWORD, session)})
    assert resp.status == 200, resp

    for client in (alice, other):
        _assert_revoked(client)

    login = Client(server).login(alice.user_id or "")
    assert login.status == 403, login
    assert login.body["errcode"] in ("M_USER_DEACTIVATED", "M_FORBIDDEN")

    profile = Client(server).get(f"profile/{alice.user_id}", token=False)
    assert profile.status in (200, 404), profile
    if profile.status == 200:
        assert "displayname" not in profile.body
    name = Client(server).get(f"profile/{alice.user_id}/displayname", token=False)
    assert name.status == 404, name

    # The user ID is not freed for someone else.
    again = Client(server).post(
        "register", {"username": _localpart(alice), "password": PASSWORD}, token=False
    )
    assert again.status == 400, again
    assert again.body["errcode"] == "M_USER_IN_USE"


def test_uia_session_is_bound_to_its_operation(alice: Client) -> None:
    started = alice.post("account/password", {"new_password": NEW_PASSWORD})
    assert started.status == 401, started
    session = started.body["session"]

    # The password-change session cannot authorise a deactivation...
    reused = alice.post("account/deactivate", {"auth": alice.password_auth(PASSWORD, session)})
    assert reused.status == 403, reused
    assert reused.body["errcode"] == "M_FORBIDDEN"
    assert alice.get("account/whoami").status == 200

    # ...but still works for what it was started for.
    ok = alice.post(
        "account/password",
        {"new_password": NEW_PASSWORD, "auth": alice.password_auth(PASSWORD, session)},
    )
    assert ok.status == 200, ok


def test_uia_session_is_bound_to_its_user(alice: Client, bob: Client) -> None:
    started = alice.post("account/password", {"new_password": NEW_PASSWORD})
    assert started.status == 401, started
    reused = bob.post(
        "account/password",
        {
            "new_password": NEW_PASSWORD,
            "auth": bob.password_auth(PASSWORD, started.body["session"]),
        },
    )
    assert reused.status == 403, reused
    assert reused.body["errcode"] == "M_FORBIDDEN"
    assert Client(bob.server).login(bob.user_id or "", PASSWORD).status == 200


def test_password_auth_as_someone_else_is_refused(alice: Client, bob: Client) -> None:
    """Bob's identifier with Alice's token does not authenticate, even with Bob's password."""
    resp = alice.post(
        "account/password", {"new_password": NEW_PASSWORD, "auth": bob.password_auth()}
    )
    # A failed stage (401 with errcode) or an outright refusal (403) are both acceptable.
    assert resp.status in (401, 403), resp
    assert resp.body["errcode"] == "M_FORBIDDEN"
    assert Client(alice.server).login(alice.user_id or "", PASSWORD).status == 200


def test_whois_self(alice: Client) -> None:
    deadline = time.monotonic() + 5
    while True:
        resp = alice.get(f"admin/whois/{alice.user_id}")
        assert resp.status == 200, resp
        assert resp.body["user_id"] == alice.user_id
        devices = resp.body["devices"]
        assert isinstance(devices, dict)
        if alice.device_id in devices or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert alice.device_id in devices, resp.body
    connections = devices[alice.device_id]["sessions"][0]["connections"]
    assert connections and connections[0]["ip"] == "127.0.0.1"
    assert isinstance(connections[0]["last_seen"], int)


def test_whois_other_user_forbidden(alice: Client, bob: Client) -> None:
    resp = alice.get(f"admin/whois/{bob.user_id}")
    assert resp.status == 403, resp
    assert resp.body["errcode"] == "M_FORBIDDEN"
    assert "devices" not in resp.body
