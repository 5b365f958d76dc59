"""Finding things over real HTTP: the user directory, message search, space hierarchies,
reports, and the simple endpoints clients call at start-up (TURN, third-party protocols,
OAuth metadata)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import string
import threading
import time
from typing import Any
from urllib.parse import quote

from tests.harness import PASSWORD, Client, Response, ServerProcess, join, leave, new_user
from tests.harness import db_rows as db_query


def q(value: str) -> str:
    return quote(value, safe="")


def word() -> str:
    """A made-up word (letters only, so every tokenizer keeps it whole) unique to a test."""
    return "zq" + "".join(secrets.choice(string.ascii_lowercase) for _ in range(10))


def create_room(client: Client, **body: Any) -> str:
    resp = client.post("createRoom", body)
    assert resp.status == 200, resp
    return str(resp.body["room_id"])


def invite_and_join(inviter: Client, invitee: Client, room_id: str) -> None:
    resp = inviter.post(f"rooms/{q(room_id)}/invite", {"user_id": invitee.user_id})
    assert resp.status == 200, resp
    join(invitee, room_id)


def send(client: Client, room_id: str, body: str, event_type: str = "m.room.message") -> str:
    content: dict[str, Any] = {"msgtype": "m.text", "body": body}
    return send_event(client, room_id, event_type, content)


def send_event(client: Client, room_id: str, event_type: str, content: dict[str, Any]) -> str:
    resp = client.put(f"rooms/{q(room_id)}/send/{q(event_type)}/{secrets.token_hex(8)}", content)
    assert resp.status == 200, resp
    return str(resp.body["event_id"])


def set_state(
    client: Client, room_id: str, event_type: str, state_key: str, content: dict[str, Any]
) -> None:
    resp = client.put(f"rooms/{q(room_id)}/state/{q(event_type)}/{q(state_key)}", content)
    assert resp.status == 200, resp


def set_displayname(client: Client, name: str) -> None:
    resp = client.put(f"profile/{q(client.user_id or '')}/displayname", {"displayname": name})
    assert resp.status == 200, resp


def assert_error(resp: Response, status: int, errcode: str | None = None) -> None:
    assert resp.status == status, resp
    assert isinstance(resp.body, dict) and "errcode" in resp.body, resp
    if errcode is not None:
        assert resp.body["errcode"] == errcode, resp


# The user directory


def directory(client: Client, term: str, limit: int | None = None) -> Response:
    body: dict[str, Any] = {"search_term": term}
    if limit is not None:
        body["limit"] = limit
    resp = client.post("user_directory/search", body)
    assert resp.status == 200, resp
    assert isinstance(resp.body["limited"], bool)
    return resp


def found(client: Client, term: str) -> set[str]:
    return {r["user_id"] for r in directory(client, term).body["results"]}


def test_directory_matches_id_and_display_name(server: ServerProcess) -> None:
    tag, name_tag = secrets.token_hex(4), secrets.token_hex(4)
    searcher = new_user(server)
    target = new_user(server, f"dirid{tag}")
    set_displayname(target, f"Quentin Name{name_tag}")
    room = create_room(target, preset="private_chat")
    invite_and_join(target, searcher, room)

    for term in (f"dirid{tag}", f"DIRID{tag.upper()}", tag[2:].upper(), target.user_id or ""):
        assert target.user_id in found(searcher, term), term
    for term in (f"name{name_tag}", f"NAME{name_tag.upper()}", f"quentin name{name_tag}"):
        results = directory(searcher, term).body["results"]
        assert [r["user_id"] for r in results] == [target.user_id], term
        assert results[0]["display_name"] == f"Quentin Name{name_tag}"
    assert found(searcher, f"nobody{secrets.token_hex(6)}") == set()
    # LIKE wildcards in the term are literal characters.
    assert target.user_id not in found(searcher, f"dirid{tag[:2]}%{tag[-2:]}")
    assert target.user_id not in found(searcher, f"dirid{tag[:3]}_{tag[4:]}")


def test_directory_avatar_in_results(server: ServerProcess) -> None:
    tag = secrets.token_hex(4)
    searcher, target = new_user(server), new_user(server, f"diravatar{tag}")
    avatar = f"mxc://{server.server_name}/avatar{tag}"
    resp = target.put(f"profile/{q(target.user_id or '')}/avatar_url", {"avatar_url": avatar})
    assert resp.status == 200, resp
    room = create_room(target, preset="public_chat")
    join(searcher, room)
    (result,) = directory(searcher, f"diravatar{tag}").body["results"]
    # New accounts start with their localpart as display name.
    assert result == {
        "user_id": target.user_id,
        "display_name": f"diravatar{tag}",
        "avatar_url": avatar,
    }


def test_directory_visibility(server: ServerProcess) -> None:
    tag = secrets.token_hex(4)
    searcher = new_user(server, f"dirsearcher{tag}")
    shared = new_user(server, f"dirshared{tag}")
    public = new_user(server, f"dirpublic{tag}")
    hidden = new_user(server, f"dirhidden{tag}")
    hidden_friend = new_user(server, f"dirfriend{tag}")
    loner = new_user(server, f"dirloner{tag}")
    invited = new_user(server, f"dirinvited{tag}")

    room = create_room(shared, preset="private_chat")
    invite_and_join(shared, searcher, room)
    create_room(public, preset="public_chat")
    secret = create_room(hidden, preset="private_chat")
    invite_and_join(hidden, hidden_friend, secret)
    # An invitation to a private room is not a shared room.
    resp = searcher.post(f"rooms/{q(room)}/invite", {"user_id": invited.user_id})
    assert resp.status == 200, resp
    assert loner.user_id

    results = found(searcher, tag)
    assert shared.user_id in results
    assert public.user_id in results
    for absent in (hidden, hidden_friend, loner, invited):
        assert absent.user_id not in results, absent.user_id
    # Someone who left the shared room is no longer found through it.
    leave(shared, room)
    assert shared.user_id not in found(searcher, f"dirshared{tag}")


def test_directory_public_means_current_join_rule_or_world_readable(
    server: ServerProcess,
) -> None:
    tag = secrets.token_hex(4)
    searcher = new_user(server)
    readable = new_user(server, f"dirreadable{tag}")
    closed = new_user(server, f"dirclosed{tag}")
    room = create_room(readable, preset="private_chat")
    set_state(
        readable, room, "m.room.history_visibility", "", {"history_visibility": "world_readable"}
    )
    was_public = create_room(closed, preset="public_chat")
    set_state(closed, was_public, "m.room.join_rules", "", {"join_rule": "invite"})
    results = found(searcher, tag)
    assert readable.user_id in results
    assert closed.user_id not in results


def test_directory_case_insensitive_beyond_ascii(server: ServerProcess) -> None:
    tag = secrets.token_hex(4)
    searcher, target = new_user(server), new_user(server)
    set_displayname(target, f"ÆRØ Ünïcödé {tag}")
    room = create_room(target, preset="public_chat")
    join(searcher, room)
    for term in (f"ærø ünïcödé {tag}", f"ÆRØ ÜNÏCÖDÉ {tag}", "ünïcödé " + tag.upper()):
        assert found(searcher, term) == {target.user_id}, term


def test_directory_names_with_quotes(server: ServerProcess) -> None:
    tag = secrets.token_hex(4)
    searcher, target = new_user(server), new_user(server)
    set_displayname(target, f'Pat "The Cat" O\\Hara {tag}')
    room = create_room(target, preset="public_chat")
    join(searcher, room)
    assert found(searcher, f'"the cat" o\\hara {tag}') == {target.user_id}


def test_directory_limit(server: ServerProcess) -> None:
    tag = secrets.token_hex(4)
    users = [new_user(server, f"dirlimit{tag}{i}") for i in range(3)]
    room = create_room(users[0], preset="public_chat")
    for user in users[1:]:
        join(user, room)
    searcher = new_user(server)
    resp = directory(searcher, f"dirlimit{tag}", limit=2)
    assert len(resp.body["results"]) == 2
    assert resp.body["limited"] is True
    resp = directory(searcher, f"dirlimit{tag}", limit=3)
    assert {r["user_id"] for r in resp.body["results"]} == {u.user_id for u in users}
    assert resp.body["limited"] is False
    resp = directory(searcher, f"dirlimit{tag}")
    assert len(resp.body["results"]) == 3 and resp.body["limited"] is False
    assert_error(searcher.post("user_directory/search", {}), 400)
    assert_error(searcher.post("user_directory/search", {"search_term": 5}), 400)
    assert_error(searcher.post("user_directory/search", {"search_term": "a", "limit": 0}), 400)
    assert_error(searcher.post("user_directory/search", {"search_term": "x"}, token=False), 401)


def test_directory_search_all_users(server_factory: Any) -> None:
    server = server_factory({"user_directory": {"search_all_users": True}})
    tag = secrets.token_hex(4)
    searcher = new_user(server)
    loner = new_user(server, f"dirall{tag}a")
    secret_keeper = new_user(server, f"dirall{tag}b")
    create_room(secret_keeper, preset="private_chat")
    gone = new_user(server, f"dirall{tag}c")
    set_displayname(loner, f"Lonely {tag}")
    assert found(searcher, f"dirall{tag}") == {loner.user_id, secret_keeper.user_id, gone.user_id}
    assert found(searcher, f"LONELY {tag}") == {loner.user_id}

    # Deactivated accounts are never found.
    first = gone.post("account/deactivate", {})
    assert first.status == 401, first
    resp = gone.post(
        "account/deactivate", {"auth": gone.password_auth(PASSWORD, first.body["session"])}
    )
    assert resp.status == 200, resp
    assert found(searcher, f"dirall{tag}") == {loner.user_id, secret_keeper.user_id}


def test_directory_hides_deactivated_users(server: ServerProcess) -> None:
    tag = secrets.token_hex(4)
    searcher = new_user(server)
    gone = new_user(server, f"dirgone{tag}")
    room = create_room(searcher, preset="public_chat")
    join(gone, room)
    assert found(searcher, f"dirgone{tag}") == {gone.user_id}
    first = gone.post("account/deactivate", {})
    resp = gone.post(
        "account/deactivate", {"auth": gone.password_auth(PASSWORD, first.body["session"])}
    )
    assert resp.status == 200, resp
    assert found(searcher, f"dirgone{tag}") == set()


# Message search


def search(client: Client, term: str, next_batch: str | None = None, **criteria: Any) -> Response:
    params = {"next_batch": next_batch} if next_batch else None
    body = {"search_categories": {"room_events": {"search_term": term, **criteria}}}
    return client.post("search", body, params=params)


def search_ok(client: Client, term: str, **criteria: Any) -> dict[str, Any]:
    resp = search(client, term, **criteria)
    assert resp.status == 200, resp
    return dict(resp.body["search_categories"]["room_events"])


def result_bodies(events: dict[str, Any]) -> list[str]:
    return [r["result"]["content"]["body"] for r in events["results"]]


def test_search_only_readable_rooms(alice: Client, bob: Client) -> None:
    term = word()
    private = create_room(alice, preset="private_chat")
    send(alice, private, f"private {term} in alice's room")
    own = create_room(bob)
    send(bob, own, f"bob's own {term}")
    assert result_bodies(search_ok(bob, term)) == [f"bob's own {term}"]
    assert result_bodies(search_ok(alice, term)) == [f"private {term} in alice's room"]

    shared = create_room(alice, preset="public_chat")
    join(bob, shared)
    send(alice, shared, f"shared {term} while bob is here")
    leave(bob, shared)
    after = send(alice, shared, f"shared {term} after bob left")
    results = search_ok(bob, term)
    ids = [r["result"]["event_id"] for r in results["results"]]
    assert after not in ids
    assert not any("private" in b or "after bob left" in b for b in result_bodies(results))
    assert f"shared {term} after bob left" in result_bodies(search_ok(alice, term))
    # Asking for a room one cannot read does not help.
    results = search_ok(bob, term, filter={"rooms": [private, shared]})
    assert results["results"] == []


def test_search_history_visibility_joined(alice: Client, bob: Client) -> None:
    term = word()
    room = create_room(
        alice,
        preset="public_chat",
        initial_state=[
            {"type": "m.room.history_visibility", "content": {"history_visibility": "joined"}}
        ],
    )
    send(alice, room, f"{term} before bob joined")
    join(bob, room)
    send(alice, room, f"{term} after bob joined")
    assert result_bodies(search_ok(bob, term)) == [f"{term} after bob joined"]
    assert len(result_bodies(search_ok(alice, term))) == 2


def test_search_never_finds_encrypted_content(alice: Client) -> None:
    term = word()
    room = create_room(alice)
    set_state(alice, room, "m.room.encryption", "", {"algorithm": "m.megolm.v1.aes-sha2"})
    content = {
        "algorithm": "m.megolm.v1.aes-sha2",
        "ciphertext": f"AwgAEnAC{term}base64ciphertext {term}",
        "body": term,
        "sender_key": "c2VuZGVyIGtleQ",
        "session_id": "c2Vzc2lvbg",
        "device_id": alice.device_id,
    }
    event_id = send_event(alice, room, "m.room.encrypted", content)
    for key in (term, f"AwgAEnAC{term}base64ciphertext"):
        results = search_ok(alice, key)
        assert results["results"] == [] and results["count"] == 0
    # The event itself is there; it is only not searchable.
    resp = alice.get(f"rooms/{q(room)}/event/{q(event_id)}")
    assert resp.status == 200, resp


def test_search_order_and_rank(alice: Client) -> None:
    term = word()
    room = create_room(alice)
    first = send(alice, room, f"{term} alpha beta gamma delta epsilon zeta eta theta iota")
    dense = send(alice, room, f"{term} {term} {term}")
    last = send(alice, room, f"kappa lambda {term} mu nu xi omicron pi rho sigma tau")
    recent = search_ok(alice, term, order_by="recent")
    assert [r["result"]["event_id"] for r in recent["results"]] == [last, dense, first]
    assert recent["count"] == 3
    ranked = search_ok(alice, term, order_by="rank")
    ids = [r["result"]["event_id"] for r in ranked["results"]]
    assert sorted(ids) == sorted([first, dense, last])
    assert ids[0] == dense
    ranks = [r["rank"] for r in ranked["results"]]
    assert all(isinstance(r, int | float) for r in ranks)
    assert ranks == sorted(ranks, reverse=True)
    assert ranks[0] > ranks[-1]
    assert term in ranked["highlights"]
    # The default order is rank.
    assert search_ok(alice, term)["results"][0]["result"]["event_id"] == dense


def test_search_keys(alice: Client) -> None:
    term = word()
    room = create_room(alice, name=f"Room {term}", topic=f"About {term}")
    message = send(alice, room, f"a message with {term}")
    everything = search_ok(alice, term)
    assert {r["result"]["type"] for r in everything["results"]} == {
        "m.room.name",
        "m.room.topic",
        "m.room.message",
    }
    only_body = search_ok(alice, term, keys=["content.body"])
    assert [r["result"]["event_id"] for r in only_body["results"]] == [message]
    only_topic = search_ok(alice, term, keys=["content.topic"])
    assert [r["result"]["type"] for r in only_topic["results"]] == ["m.room.topic"]
    assert_error(search(alice, term, keys=["content.nope"]), 400)


def test_search_filters(alice: Client, bob: Client) -> None:
    term = word()
    one = create_room(alice, preset="public_chat")
    two = create_room(alice, preset="public_chat")
    join(bob, one)
    join(bob, two)
    sent = {
        (room, who.user_id): send(who, room, f"{term} from {who.user_id}")
        for room in (one, two)
        for who in (alice, bob)
    }

    def ids(results: dict[str, Any]) -> set[str]:
        return {r["result"]["event_id"] for r in results["results"]}

    assert ids(search_ok(alice, term)) == set(sent.values())
    in_one = search_ok(alice, term, filter={"rooms": [one]})
    assert ids(in_one) == {sent[(one, alice.user_id)], sent[(one, bob.user_id)]}
    assert in_one["count"] == 2
    not_one = search_ok(alice, term, filter={"not_rooms": [one]})
    assert ids(not_one) == {sent[(two, alice.user_id)], sent[(two, bob.user_id)]}
    by_bob = search_ok(alice, term, filter={"senders": [bob.user_id]})
    assert ids(by_bob) == {sent[(one, bob.user_id)], sent[(two, bob.user_id)]}
    both = search_ok(alice, term, filter={"rooms": [two], "senders": [bob.user_id]})
    assert ids(both) == {sent[(two, bob.user_id)]}


def test_search_context_and_groups(alice: Client) -> None:
    term = word()
    set_displayname(alice, "Alice Searcher")
    room = create_room(alice)
    other = create_room(alice)
    for body in ("one", "two"):
        send(alice, room, body)
    target = send(alice, room, f"the {term} itself")
    send(alice, room, "four")
    send(alice, room, "five")
    elsewhere = send(alice, other, f"another {term}")

    results = search_ok(
        alice,
        term,
        order_by="recent",
        event_context={"before_limit": 2, "after_limit": 1, "include_profile": True},
        groupings={"group_by": [{"key": "room_id"}]},
    )
    by_id = {r["result"]["event_id"]: r for r in results["results"]}
    assert set(by_id) == {target, elsewhere}
    context = by_id[target]["context"]
    assert sorted(e["content"]["body"] for e in context["events_before"]) == ["one", "two"]
    assert [e["content"]["body"] for e in context["events_after"]] == ["four"]
    assert isinstance(context["start"], str) and isinstance(context["end"], str)
    assert context["profile_info"][alice.user_id]["displayname"] == "Alice Searcher"

    groups = results["groups"]["room_id"]
    assert set(groups) == {room, other}
    assert groups[room]["results"] == [target]
    assert groups[other]["results"] == [elsewhere]
    orders = [g["order"] for g in groups.values()]
    assert all(isinstance(o, int) for o in orders) and len(set(orders)) == 2

    # Without event_context there is no context.
    plain = search_ok(alice, term)
    assert all("context" not in r for r in plain["results"])


def test_search_include_state(alice: Client) -> None:
    term = word()
    room = create_room(alice, name="Stateful")
    quiet = create_room(alice)
    send(alice, room, f"with state {term}")
    results = search_ok(alice, term, include_state=True)
    assert set(results["state"]) == {room}
    current = {(e["type"], e["state_key"]): e for e in results["state"][room]}
    assert current[("m.room.name", "")]["content"] == {"name": "Stateful"}
    assert current[("m.room.member", alice.user_id)]["content"]["membership"] == "join"
    assert quiet not in results["state"]
    assert "state" not in search_ok(alice, term)


def test_search_pagination(alice: Client) -> None:
    term = word()
    room = create_room(alice)
    sent = [send(alice, room, f"{term} number {i}") for i in range(5)]
    for order_by in ("recent", "rank"):
        seen: list[str] = []
        next_batch: str | None = None
        for _ in range(10):
            resp = search(alice, term, next_batch, order_by=order_by, filter={"limit": 1})
            assert resp.status == 200, resp
            events = resp.body["search_categories"]["room_events"]
            assert events["count"] == 5
            assert len(events["results"]) <= 1
            seen += [r["result"]["event_id"] for r in events["results"]]
            next_batch = events.get("next_batch")
            if next_batch is None:
                break
        assert sorted(seen) == sorted(sent), order_by
        if order_by == "recent":
            assert seen == list(reversed(sent))
    assert_error(search(alice, term, "not-a-token"), 400)


def test_search_redacted_message_not_found(alice: Client) -> None:
    term = word()
    room = create_room(alice)
    event_id = send(alice, room, f"regrettable {term}")
    kept = send(alice, room, f"fine {term}")
    assert len(search_ok(alice, term)["results"]) == 2
    resp = alice.put(f"rooms/{q(room)}/redact/{q(event_id)}/{secrets.token_hex(4)}", {})
    assert resp.status == 200, resp
    results = search_ok(alice, term)
    assert [r["result"]["event_id"] for r in results["results"]] == [kept]
    assert results["count"] == 1
    assert search_ok(alice, "regrettable")["results"] == []


def test_search_errors(alice: Client) -> None:
    assert_error(alice.post("search", {"search_categories": {"room_events": {}}}), 400)
    resp = alice.post("search", {"search_categories": {"room_events": {"search_term": ""}}})
    assert_error(resp, 400)
    assert_error(alice.post("search", {}), 400)
    assert_error(search(alice, "x", order_by="random"), 400)
    assert_error(search(alice, "x", filter={"limit": 0}), 400)
    assert_error(alice.post("search", {}, token=False), 401)


# Spaces


def create_space(client: Client, preset: str = "public_chat", **body: Any) -> str:
    return create_room(client, preset=preset, creation_content={"type": "m.space"}, **body)


def add_child(client: Client, space: str, child: str, **content: Any) -> None:
    via = [client.server.server_name]
    set_state(client, space, "m.space.child", child, {"via": via, **content})


def hierarchy(client: Client, room_id: str, **params: Any) -> Response:
    return client.request(
        "GET",
        f"/_matrix/client/v1/rooms/{q(room_id)}/hierarchy",
        params={k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in params.items()},
    )


def room_ids(resp: Response) -> list[str]:
    assert resp.status == 200, resp
    return [r["room_id"] for r in resp.body["rooms"]]


def test_hierarchy_children(alice: Client, bob: Client) -> None:
    space = create_space(alice, name="The Space", topic="Space topic")
    suggested = create_room(alice, preset="public_chat", name="Suggested")
    plain = create_room(alice, preset="public_chat")
    private = create_room(alice, preset="private_chat", name="Secret")
    removed = create_room(alice, preset="public_chat")
    add_child(alice, space, suggested, suggested=True)
    add_child(alice, space, plain)
    add_child(alice, space, private)
    add_child(alice, space, removed)
    set_state(alice, space, "m.space.child", removed, {})  # no via: no longer a child

    resp = hierarchy(bob, space)
    ids = room_ids(resp)
    assert ids[0] == space
    assert sorted(ids[1:]) == sorted([suggested, plain])
    assert "next_batch" not in resp.body
    root = resp.body["rooms"][0]
    assert root["name"] == "The Space" and root["topic"] == "Space topic"
    assert root["room_type"] == "m.space"
    assert root["join_rule"] == "public"
    assert root["num_joined_members"] == 1
    assert root["world_readable"] is False and root["guest_can_join"] is False
    children = {c["state_key"]: c for c in root["children_state"]}
    assert set(children) == {suggested, plain, private}
    for child in children.values():
        assert child["type"] == "m.space.child"
        assert child["sender"] == alice.user_id
        assert child["content"]["via"] == [alice.server.server_name]
        assert isinstance(child["origin_server_ts"], int)
    assert children[suggested]["content"]["suggested"] is True
    by_id = {r["room_id"]: r for r in resp.body["rooms"]}
    assert by_id[suggested]["name"] == "Suggested"
    assert by_id[suggested]["children_state"] == []
    assert "room_type" not in by_id[suggested]

    # The space's own members see the private child too.
    assert sorted(room_ids(hierarchy(alice, space))[1:]) == sorted([suggested, plain, private])
    # As does someone invited to it.
    resp = alice.post(f"rooms/{q(private)}/invite", {"user_id": bob.user_id})
    assert resp.status == 200, resp
    assert private in room_ids(hierarchy(bob, space))

    assert room_ids(hierarchy(bob, space, suggested_only=True)) == [space, suggested]


def test_hierarchy_depth(alice: Client, bob: Client) -> None:
    space = create_space(alice)
    sub = create_space(alice)
    leaf = create_room(alice, preset="public_chat")
    sibling = create_room(alice, preset="public_chat")
    add_child(alice, space, sub, order="a")
    add_child(alice, space, sibling, order="b")
    add_child(alice, sub, leaf)
    # A loop back to the top is visited once.
    add_child(alice, sub, space)

    assert room_ids(hierarchy(bob, space, max_depth=0)) == [space]
    assert sorted(room_ids(hierarchy(bob, space, max_depth=1))) == sorted([space, sub, sibling])
    everything = room_ids(hierarchy(bob, space))
    assert sorted(everything) == sorted([space, sub, leaf, sibling])
    # Depth first, children in their "order".
    assert everything == [space, sub, leaf, sibling]


def test_hierarchy_pagination(alice: Client, bob: Client) -> None:
    space = create_space(alice)
    children = [create_room(alice, preset="public_chat") for _ in range(4)]
    for child in children:
        add_child(alice, space, child)
    seen: list[str] = []
    token: str | None = None
    for _ in range(10):
        params: dict[str, Any] = {"limit": 2}
        if token:
            params["from"] = token
        resp = hierarchy(bob, space, **params)
        page = room_ids(resp)
        assert 1 <= len(page) <= 2
        seen += page
        token = resp.body.get("next_batch")
        if token is None:
            break
    assert len(seen) == 5 and sorted(seen) == sorted([space, *children])
    assert seen[0] == space
    assert_error(hierarchy(bob, space, limit=0), 400)
    assert_error(hierarchy(bob, space, max_depth=-1), 400)
    assert_error(hierarchy(bob, space, **{"from": "garbage"}), 400)
    # suggested_only and max_depth cannot change between pages.
    first = hierarchy(bob, space, limit=1)
    token = first.body["next_batch"]
    assert hierarchy(bob, space, limit=1, **{"from": token}).status == 200
    assert_error(hierarchy(bob, space, limit=1, suggested_only=True, **{"from": token}), 400)
    assert_error(hierarchy(bob, space, limit=1, max_depth=1, **{"from": token}), 400)


def test_hierarchy_restricted_child(server: ServerProcess, alice: Client, bob: Client) -> None:
    carol = new_user(server)
    space = create_space(alice)
    restricted = create_room(
        alice,
        room_version="10",
        initial_state=[
            {
                "type": "m.room.join_rules",
                "content": {
                    "join_rule": "restricted",
                    "allow": [{"type": "m.room_membership", "room_id": space}],
                },
            }
        ],
    )
    add_child(alice, space, restricted)
    join(bob, space)
    assert room_ids(hierarchy(bob, space)) == [space, restricted]
    assert room_ids(hierarchy(carol, space)) == [space]
    summary = hierarchy(bob, space).body["rooms"][1]
    assert summary["join_rule"] == "restricted"


def test_hierarchy_access(server: ServerProcess, alice: Client, bob: Client) -> None:
    private_space = create_space(alice, preset="private_chat")
    add_child(alice, private_space, create_room(alice, preset="public_chat"))
    assert_error(hierarchy(bob, private_space), 403, "M_FORBIDDEN")
    assert len(room_ids(hierarchy(alice, private_space))) == 2
    # The spec lists "the room does not exist" among the reasons for 403.
    unknown = f"!doesnotexist{secrets.token_hex(4)}:{server.server_name}"
    assert_error(hierarchy(bob, unknown), 403, "M_FORBIDDEN")
    assert_error(hierarchy(Client(server), private_space), 401)


# Reports


def reports_for(server: ServerProcess, reporter: str | None) -> list[tuple[Any, ...]]:
    return db_query(
        server,
        "SELECT room_id, event_id, target_user_id, reason, score FROM reports "
        "WHERE reporter = ? ORDER BY id",
        (reporter,),
    )


def test_report_event(server: ServerProcess, alice: Client, bob: Client) -> None:
    carol = new_user(server)
    room = create_room(alice, preset="public_chat")
    join(bob, room)
    event_id = send(alice, room, "something offensive")
    resp = bob.post(f"rooms/{q(room)}/report/{q(event_id)}", {"reason": "rude", "score": -80})
    assert resp.status == 200, resp
    assert resp.body == {}
    assert reports_for(server, bob.user_id) == [(room, event_id, None, "rude", -80)]
    # Reason and score are optional.
    resp = bob.post(f"rooms/{q(room)}/report/{q(event_id)}", {})
    assert resp.status == 200, resp
    assert len(reports_for(server, bob.user_id)) == 2

    for bad_score in (1, -101, "bad", 1.5):
        resp = bob.post(
            f"rooms/{q(room)}/report/{q(event_id)}", {"reason": "x", "score": bad_score}
        )
        assert_error(resp, 400)
    assert_error(bob.post(f"rooms/{q(room)}/report/{q(event_id)}", {"reason": 5}), 400)

    # Someone not in the room cannot report its events; nor can anyone report unknown ones.
    resp = carol.post(f"rooms/{q(room)}/report/{q(event_id)}", {"reason": "x"})
    assert_error(resp, 404, "M_NOT_FOUND")
    resp = bob.post(f"rooms/{q(room)}/report/{q('$doesnotexist')}", {"reason": "x"})
    assert_error(resp, 404, "M_NOT_FOUND")
    other = create_room(alice, preset="public_chat")
    resp = bob.post(f"rooms/{q(other)}/report/{q(event_id)}", {"reason": "x"})
    assert_error(resp, 404, "M_NOT_FOUND")
    assert reports_for(server, carol.user_id) == []
    assert len(reports_for(server, bob.user_id)) == 2


def test_report_event_requires_being_joined(server: ServerProcess, alice: Client) -> None:
    dave = new_user(server)
    room = create_room(alice, preset="public_chat")
    join(dave, room)
    event_id = send(alice, room, "seen while joined")
    leave(dave, room)
    # The spec: "The caller must be joined to the room to report it."
    resp = dave.post(f"rooms/{q(room)}/report/{q(event_id)}", {"reason": "x"})
    assert_error(resp, 404, "M_NOT_FOUND")
    assert reports_for(server, dave.user_id) == []


def test_report_room_and_user(server: ServerProcess, alice: Client, bob: Client) -> None:
    room = create_room(alice, preset="private_chat")
    # Reporting a room does not need membership.
    resp = bob.post(f"rooms/{q(room)}/report", {"reason": "spam room"})
    assert resp.status == 200, resp
    resp = bob.post(f"users/{q(alice.user_id or '')}/report", {"reason": "spammer"})
    assert resp.status == 200, resp
    assert reports_for(server, bob.user_id) == [
        (room, None, None, "spam room", None),
        (None, None, alice.user_id, "spammer", None),
    ]
    unknown_user = f"@nobody{secrets.token_hex(4)}:{server.server_name}"
    assert_error(bob.post(f"users/{q(unknown_user)}/report", {"reason": "x"}), 404, "M_NOT_FOUND")
    unknown_room = f"!nothere{secrets.token_hex(4)}:{server.server_name}"
    assert_error(bob.post(f"rooms/{q(unknown_room)}/report", {"reason": "x"}), 404, "M_NOT_FOUND")
    assert len(reports_for(server, bob.user_id)) == 2
    # For rooms and users the reason is required (though it may be blank).
    for path in (f"rooms/{q(room)}/report", f"users/{q(alice.user_id or '')}/report"):
        assert_error(bob.post(path, {}), 400)
        assert_error(bob.post(path, {"reason": 7}), 400)
        assert bob.post(path, {"reason": ""}).status == 200
    assert len(reports_for(server, bob.user_id)) == 4
    assert_error(Client(server).post(f"rooms/{q(room)}/report", {"reason": "x"}), 401)


def test_concurrent_reports_are_all_stored(server: ServerProcess, alice: Client) -> None:
    reporter = new_user(server)
    rooms = [create_room(alice, preset="public_chat") for _ in range(2)]
    results: list[Response] = []
    lock = threading.Lock()

    def report(i: int) -> None:
        session = Client(server, reporter.token)
        resp = session.post(f"rooms/{q(rooms[i % 2])}/report", {"reason": f"r{i}"})
        with lock:
            results.append(resp)

    threads = [threading.Thread(target=report, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [r.status for r in results] == [200] * 12, results
    stored = reports_for(server, reporter.user_id)
    assert sorted(r[3] for r in stored) == sorted(f"r{i}" for i in range(12))


# Start-up endpoints


def test_turn_server_unconfigured(alice: Client) -> None:
    resp = alice.get("voip/turnServer")
    assert resp.status == 200, resp
    assert resp.body == {}
    assert_error(Client(alice.server).get("voip/turnServer"), 401)


def test_turn_server_credentials(server_factory: Any) -> None:
    secret = "turn-" + secrets.token_hex(8)
    uris = ["turn:turn.example.org:3478?transport=udp", "turns:turn.example.org:5349"]
    server = server_factory(
        {"voip": {"turn_uris": uris, "turn_shared_secret": secret, "turn_user_lifetime": "2h"}}
    )
    alice = new_user(server)
    now = time.time()
    resp = alice.get("voip/turnServer")
    assert resp.status == 200, resp
    body = resp.body
    assert body["uris"] == uris
    assert body["ttl"] == 7200
    expiry, user = body["username"].split(":", 1)
    assert user == alice.user_id
    assert abs(int(expiry) - (now + 7200)) < 60
    expected = base64.b64encode(
        hmac.new(secret.encode(), body["username"].encode(), hashlib.sha1).digest()
    ).decode()
    assert body["password"] == expected


def test_thirdparty_protocols(alice: Client) -> None:
    resp = alice.get("thirdparty/protocols")
    assert resp.status == 200, resp
    assert resp.body == {}
    assert_error(Client(alice.server).get("thirdparty/protocols"), 401)


def test_auth_metadata_unrecognized(alice: Client) -> None:
    for token in (True, False):
        resp = alice.request("GET", "/_matrix/client/v1/auth_metadata", token=token)
        assert_error(resp, 404, "M_UNRECOGNIZED")
