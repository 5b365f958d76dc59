"""Global and per-room account data: storage, ownership, server-managed types, restarts."""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import quote

from tests.harness import Client, ServerProcess, new_user


def global_path(user_id: str | None, data_type: str) -> str:
    assert user_id is not None
    return f"user/{quote(user_id, safe='')}/account_data/{quote(data_type, safe='')}"


def room_path(user_id: str | None, room_id: str, data_type: str) -> str:
    assert user_id is not None
    return (
        f"user/{quote(user_id, safe='')}/rooms/{quote(room_id, safe='')}"
        f"/account_data/{quote(data_type, safe='')}"
    )


def test_put_then_get(alice: Client) -> None:
    content = {"theme": "dark", "nested": {"list": [1, "two", None, True]}, "n": 1.5}
    resp = alice.put(global_path(alice.user_id, "org.example.settings"), content)
    assert resp.status == 200, resp
    assert resp.body == {}
    resp = alice.get(global_path(alice.user_id, "org.example.settings"))
    assert resp.status == 200, resp
    assert resp.body == content
    # Overwriting replaces the whole object.
    assert alice.put(global_path(alice.user_id, "org.example.settings"), {"x": 1}).status == 200
    assert alice.get(global_path(alice.user_id, "org.example.settings")).body == {"x": 1}


def test_missing_is_404(alice: Client) -> None:
    resp = alice.get(global_path(alice.user_id, "org.example.never_set"))
    assert resp.status == 404, resp
    assert resp.body["errcode"] == "M_NOT_FOUND"


def test_other_users_account_data_is_forbidden(alice: Client, bob: Client) -> None:
    assert bob.put(global_path(bob.user_id, "org.example.secret"), {"s": 1}).status == 200
    resp = alice.get(global_path(bob.user_id, "org.example.secret"))
    assert resp.status == 403, resp
    assert resp.body["errcode"] == "M_FORBIDDEN"
    resp = alice.put(global_path(bob.user_id, "org.example.secret"), {"s": 2})
    assert resp.status == 403, resp
    assert resp.body["errcode"] == "M_FORBIDDEN"
    assert bob.get(global_path(bob.user_id, "org.example.secret")).body == {"s": 1}

    room = "!room:" + alice.server.server_name
    resp = alice.put(room_path(bob.user_id, room, "org.example.secret"), {"s": 3})
    assert resp.status == 403, resp
    assert resp.body["errcode"] == "M_FORBIDDEN"
    resp = alice.get(room_path(bob.user_id, room, "org.example.secret"))
    assert resp.status == 403, resp


def test_server_managed_types_are_405(alice: Client) -> None:
    room = "!room:" + alice.server.server_name
    for data_type in ("m.fully_read", "m.push_rules"):
        resp = alice.put(global_path(alice.user_id, data_type), {"event_id": "$x"})
        assert resp.status == 405, (data_type, resp)
        assert resp.body["errcode"] == "M_BAD_JSON"
        resp = alice.put(room_path(alice.user_id, room, data_type), {"event_id": "$x"})
        assert resp.status == 405, (data_type, resp)
        assert resp.body["errcode"] == "M_BAD_JSON"


def test_non_object_body_is_bad_json(alice: Client) -> None:
    for raw in (b"[1, 2]", b'"text"', b"3", b"null"):
        resp = alice.request("PUT", global_path(alice.user_id, "org.example.x"), raw=raw)
        assert resp.status == 400, (raw, resp)
        assert resp.body["errcode"] == "M_BAD_JSON", (raw, resp)
    assert alice.get(global_path(alice.user_id, "org.example.x")).status == 404


def test_room_account_data(alice: Client) -> None:
    room = "!abc:" + alice.server.server_name
    resp = alice.put(room_path(alice.user_id, room, "org.example.tagged"), {"room": True})
    assert resp.status == 200, resp
    resp = alice.get(room_path(alice.user_id, room, "org.example.tagged"))
    assert resp.status == 200, resp
    assert resp.body == {"room": True}
    # Room data is separate from global data and from other rooms.
    assert alice.get(global_path(alice.user_id, "org.example.tagged")).status == 404
    other_room = "!other:" + alice.server.server_name
    resp = alice.get(room_path(alice.user_id, other_room, "org.example.tagged"))
    assert resp.status == 404
    assert resp.body["errcode"] == "M_NOT_FOUND"


def test_room_account_data_needs_a_room_id(alice: Client) -> None:
    for not_a_room in ("#alias:" + alice.server.server_name, "abc", "@alice:example.org"):
        resp = alice.put(room_path(alice.user_id, not_a_room, "org.example.t"), {"a": 1})
        assert resp.status == 400, (not_a_room, resp)
        assert resp.body["errcode"] == "M_INVALID_PARAM"
        resp = alice.get(room_path(alice.user_id, not_a_room, "org.example.t"))
        assert resp.status == 400, (not_a_room, resp)
        assert resp.body["errcode"] == "M_INVALID_PARAM"


def test_account_data_survives_restart(server_factory: Callable[..., ServerProcess]) -> None:
    srv = server_factory()
    user = new_user(srv)
    room = "!persist:" + srv.server_name
    assert user.put(global_path(user.user_id, "org.example.keep"), {"v": [1, 2, 3]}).status == 200
    assert user.put(room_path(user.user_id, room, "org.example.keep"), {"r": "ok"}).status == 200
    srv.restart()
    resp = user.get(global_path(user.user_id, "org.example.keep"))
    assert resp.status == 200, resp
    assert resp.body == {"v": [1, 2, 3]}
    resp = user.get(room_path(user.user_id, room, "org.example.keep"))
    assert resp.status == 200, resp
    assert resp.body == {"r": "ok"}
