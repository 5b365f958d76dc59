"""Device management, where each session was last seen from, and forgetting it again."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from tests.harness import PASSWORD, Client, ServerProcess, new_user
from tests.harness import db_rows as db_query

# A documentation address (RFC 5737), so that it cannot be confused with the loopback peer.
FORWARDED_IP = "203.0.113.7"


def all_table_text(server: ServerProcess) -> str:
    """Every row of every table, as one string, to search for a value anywhere."""
    if server.db_kind == "sqlite":
        tables = [
            r[0] for r in db_query(server, "SELECT name FROM sqlite_master WHERE type='table'")
        ]
    else:
        tables = [
            r[0]
            for r in db_query(
                server,
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'",
            )
        ]
    assert "client_ips" in tables
    return "\n".join(f"{t}: {db_query(server, f'SELECT * FROM {t}')!r}" for t in tables)


def client_ip_rows(server: ServerProcess, user_id: str, device_id: str) -> list[tuple[Any, ...]]:
    return db_query(
        server,
        "SELECT ip, last_seen_ts FROM client_ips WHERE user_id = ? AND device_id = ?",
        (user_id, device_id),
    )


def wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def second_session(user: Client, **extra: Any) -> Client:
    other = Client(user.server)
    assert user.user_id is not None
    resp = other.login(user.user_id, **extra)
    assert resp.status == 200, resp
    return other


def device_map(user: Client, **kwargs: Any) -> dict[str, dict[str, Any]]:
    resp = user.get("devices", **kwargs)
    assert resp.status == 200, resp
    return {d["device_id"]: d for d in resp.body["devices"]}


def test_list_devices_shows_name_and_last_seen(alice: Client) -> None:
    phone = second_session(alice, initial_device_display_name="Alice's phone")
    before_ms = int(time.time() * 1000)
    assert phone.get("account/whoami").status == 200
    devices = device_map(phone)
    assert set(devices) == {alice.device_id, phone.device_id}
    mine = devices[phone.device_id]
    assert mine["display_name"] == "Alice's phone"
    assert mine["last_seen_ip"] == "127.0.0.1"
    assert isinstance(mine["last_seen_ts"], int)
    assert before_ms - 5000 <= mine["last_seen_ts"] <= int(time.time() * 1000) + 5000


def test_get_single_device(alice: Client) -> None:
    named = second_session(alice, initial_device_display_name="Laptop")
    resp = alice.get(f"devices/{named.device_id}")
    assert resp.status == 200, resp
    assert resp.body["device_id"] == named.device_id
    assert resp.body["display_name"] == "Laptop"
    resp = alice.get(f"devices/{alice.device_id}")
    assert resp.status == 200
    assert resp.body["device_id"] == alice.device_id
    assert resp.body["last_seen_ip"] == "127.0.0.1"


def test_rename_device(alice: Client) -> None:
    resp = alice.put(f"devices/{alice.device_id}", {"display_name": "Renamed ✓"})
    assert resp.status == 200, resp
    assert resp.body == {}
    assert alice.get(f"devices/{alice.device_id}").body["display_name"] == "Renamed ✓"
    assert device_map(alice)[alice.device_id]["display_name"] == "Renamed ✓"


def test_unknown_and_foreign_devices_are_not_found(alice: Client, bob: Client) -> None:
    for device_id in ("NO_SUCH_DEVICE", bob.device_id):
        resp = alice.get(f"devices/{device_id}")
        assert resp.status == 404, (device_id, resp)
        assert resp.body["errcode"] == "M_NOT_FOUND"
        resp = alice.put(f"devices/{device_id}", {"display_name": "stolen"})
        assert resp.status == 404, (device_id, resp)
        assert resp.body["errcode"] == "M_NOT_FOUND"
    # Bob's device was not renamed by the attempt.
    assert bob.get(f"devices/{bob.device_id}").body["display_name"] != "stolen"


def test_delete_device_needs_password_and_revokes_token(alice: Client) -> None:
    other = second_session(alice)
    assert other.get("account/whoami").status == 200

    first = alice.delete(f"devices/{other.device_id}", {})
    assert first.status == 401, first
    session = first.body["session"]
    assert isinstance(session, str) and session
    assert {"stages": ["m.login.password"]} in first.body["flows"]
    # Nothing happened yet.
    assert other.get("account/whoami").status == 200

    wrong = alice.delete(
        f"devices/{other.device_id}",
        {"auth": alice.password_auth("wrong password", session)},
    )
    assert wrong.status == 401, wrong
    assert wrong.body["errcode"] == "M_FORBIDDEN"
    assert other.get("account/whoami").status == 200

    resp = alice.delete(
        f"devices/{other.device_id}", {"auth": alice.password_auth(PASSWORD, session)}
    )
    assert resp.status == 200, resp
    gone = other.get("account/whoami")
    assert gone.status == 401
    assert gone.body["errcode"] == "M_UNKNOWN_TOKEN"
    assert other.device_id not in device_map(alice)
    assert alice.get(f"devices/{other.device_id}").status == 404
    # The session doing the deleting still works.
    assert alice.get("account/whoami").status == 200


def test_delete_devices_in_bulk(alice: Client) -> None:
    one, two, keep = second_session(alice), second_session(alice), second_session(alice)
    ids = [one.device_id, two.device_id]
    first = alice.post("delete_devices", {"devices": ids})
    assert first.status == 401, first
    assert {"stages": ["m.login.password"]} in first.body["flows"]
    assert one.get("account/whoami").status == 200

    resp = alice.post(
        "delete_devices",
        {"devices": ids, "auth": alice.password_auth(PASSWORD, first.body["session"])},
    )
    assert resp.status == 200, resp
    for gone in (one, two):
        r = gone.get("account/whoami")
        assert r.status == 401
        assert r.body["errcode"] == "M_UNKNOWN_TOKEN"
    assert keep.get("account/whoami").status == 200
    assert set(device_map(alice)) == {alice.device_id, keep.device_id}


def test_forwarded_for_believed_only_from_trusted_proxy(
    server_factory: Callable[..., ServerProcess],
) -> None:
    proxied = server_factory({"privacy": {"trusted_proxies": ["127.0.0.1/32"]}})
    user = new_user(proxied)
    xff = {"X-Forwarded-For": FORWARDED_IP}
    assert user.get("account/whoami", headers=xff).status == 200
    device = device_map(user, headers=xff)[user.device_id]
    assert device["last_seen_ip"] == FORWARDED_IP
    # And it is what reaches the database.
    assert wait_for(
        lambda: (
            FORWARDED_IP in [r[0] for r in client_ip_rows(proxied, user.user_id, user.device_id)]
        )
    )


def test_forwarded_for_ignored_without_trusted_proxies(alice: Client) -> None:
    xff = {"X-Forwarded-For": FORWARDED_IP}
    assert alice.get("account/whoami", headers=xff).status == 200
    assert device_map(alice, headers=xff)[alice.device_id]["last_seen_ip"] == "127.0.0.1"
    time.sleep(0.5)  # past the flush interval (200ms)
    ips = [r[0] for r in client_ip_rows(alice.server, alice.user_id, alice.device_id)]
    assert ips == ["127.0.0.1"]


def test_client_ips_expire_after_retention(
    server_factory: Callable[..., ServerProcess],
) -> None:
    srv = server_factory(
        {
            "privacy": {
                "client_ip_retention": "1s",
                "client_ip_purge_interval": "200ms",
                "client_ip_flush_interval": "100ms",
                # Device A comes "through a proxy" so its address is distinguishable from
                # device B's own loopback address.
                "trusted_proxies": ["127.0.0.1/32"],
            }
        }
    )
    a = new_user(srv)
    assert a.get("account/whoami", headers={"X-Forwarded-For": FORWARDED_IP}).status == 200
    b = second_session(a)
    seen = device_map(b)[a.device_id]
    assert seen["last_seen_ip"] == FORWARDED_IP
    assert seen["last_seen_ts"] is not None

    time.sleep(2.5)
    devices = device_map(b)
    assert devices[a.device_id]["last_seen_ip"] is None
    assert devices[a.device_id]["last_seen_ts"] is None
    # B has just been seen, so it still has its own (fresh) record.
    assert devices[b.device_id]["last_seen_ip"] == "127.0.0.1"
    assert client_ip_rows(srv, a.user_id, a.device_id) == []
    assert FORWARDED_IP not in all_table_text(srv)


def test_logout_removes_client_ip_rows(alice: Client) -> None:
    server = alice.server
    other = second_session(alice)
    assert other.get("account/whoami").status == 200
    assert wait_for(lambda: client_ip_rows(server, other.user_id, other.device_id) != [])
    assert other.post("logout", {}).status == 200
    assert client_ip_rows(server, other.user_id, other.device_id) == []
    assert other.get("account/whoami").status == 401

    # A sighting still waiting in the write buffer at logout is never written either.
    quick = second_session(alice)
    assert quick.get("account/whoami").status == 200
    assert quick.post("logout", {}).status == 200
    time.sleep(0.6)  # three flush intervals
    assert client_ip_rows(server, quick.user_id, quick.device_id) == []
    assert client_ip_rows(server, other.user_id, other.device_id) == []
    devices = device_map(alice)
    assert other.device_id not in devices
    assert quick.device_id not in devices


def test_only_the_latest_address_of_a_session_is_kept(
    server_factory: Callable[..., ServerProcess],
) -> None:
    """No history: a session seen from a second address forgets the first; with
    logging.access_log_ips off, the access log holds no address either."""
    srv = server_factory({
        "privacy": {"client_ip_flush_interval": "100ms", "trusted_proxies": ["127.0.0.1/32"]},
        "logging": {"access_log_ips": False},
    })  # fmt: skip
    a = new_user(srv)
    first, second = "198.51.100.7", "203.0.113.9"
    assert a.get("account/whoami", headers={"X-Forwarded-For": first}).status == 200
    assert wait_for(lambda: [r[0] for r in client_ip_rows(srv, a.user_id, a.device_id)] == [first])
    assert a.get("account/whoami", headers={"X-Forwarded-For": second,
                                            "User-Agent": "Second/2.0"}).status == 200  # fmt: skip
    assert wait_for(lambda: [r[0] for r in client_ip_rows(srv, a.user_id, a.device_id)] == [second])
    assert first not in all_table_text(srv)
    log = srv.log_text()
    assert "/account/whoami" in log and first not in log and second not in log
