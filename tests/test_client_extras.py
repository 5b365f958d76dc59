"""Smaller client-server calls real clients make: room summaries (MSC3266), mutual rooms,
the support well-known, phone-number endpoints, and the legacy calls answered 404."""

from __future__ import annotations

from collections.abc import Callable

from tests.harness import Client, ServerProcess, create_room, join, new_user, q


def test_room_summary_for_members_strangers_and_anonymous_callers(
    alice: Client, bob: Client, client: Client
) -> None:
    public = create_room(alice, preset="public_chat", name="Open house",
                         topic="All welcome")  # fmt: skip
    private = create_room(alice, preset="private_chat", name="Secret")
    anonymous = client.get(f"/_matrix/client/v1/room_summary/{q(public)}", token=False)
    assert anonymous.status == 200, anonymous
    body = anonymous.body
    assert body["room_id"] == public and body["name"] == "Open house"
    assert body["topic"] == "All welcome" and body["join_rule"] == "public"
    assert body["num_joined_members"] == 1 and body["room_version"] == "12"
    assert "membership" not in body
    member_view = alice.get(f"/_matrix/client/v1/room_summary/{q(public)}").body
    assert member_view["membership"] == "join"
    # A private room: its members see it, nobody else learns anything (not even that
    # it exists).
    assert alice.get(f"/_matrix/client/v1/room_summary/{q(private)}").status == 200
    for caller, token in ((bob, True), (client, False)):
        hidden = caller.get(f"/_matrix/client/v1/room_summary/{q(private)}", token=token)
        assert hidden.status == 404, hidden
    missing = bob.get(f"/_matrix/client/v1/room_summary/{q('!nosuch:' + alice.server.server_name)}")
    assert missing.status == 404
    unstable = bob.get(f"/_matrix/client/unstable/im.nheko.summary/rooms/{q(public)}/summary")
    assert unstable.status == 200 and unstable.body["room_id"] == public


def test_mutual_rooms(alice: Client, bob: Client, server: ServerProcess) -> None:
    shared = create_room(alice)
    join(bob, shared)
    create_room(alice)  # alice's alone
    carol = new_user(server)
    other = create_room(bob)
    join(carol, other)
    resp = alice.get("/_matrix/client/v1/mutual_rooms", params={"user_id": bob.user_id or ""})
    assert resp.status == 200, resp
    assert resp.body["joined"] == [shared]
    assert alice.get("/_matrix/client/v1/mutual_rooms").status == 400


def test_support_well_known(server_factory: Callable[..., ServerProcess], client: Client) -> None:
    assert client.get("/.well-known/matrix/support", token=False).status == 404
    server = server_factory({"well_known": {
        "support_contacts": [{"role": "m.role.admin", "email_address": "admin@example.org"}],
        "support_page": "https://example.org/help",
    }})  # fmt: skip
    resp = Client(server).get("/.well-known/matrix/support", token=False)
    assert resp.status == 200, resp
    assert resp.body == {
        "contacts": [{"role": "m.role.admin", "email_address": "admin@example.org"}],
        "support_page": "https://example.org/help",
    }


def test_phone_numbers_are_not_supported(client: Client, alice: Client) -> None:
    for path in ("register/msisdn/requestToken", "account/3pid/msisdn/requestToken",
                 "account/password/msisdn/requestToken"):  # fmt: skip
        resp = alice.post(path, {"country": "GB", "phone_number": "07700900000",
                                 "client_secret": "s", "send_attempt": 1})  # fmt: skip
        assert resp.status == 400, (path, resp)
        assert resp.body["errcode"] == "M_THREEPID_MEDIUM_NOT_SUPPORTED"


def test_deprecated_legacy_calls_are_a_clean_404(alice: Client) -> None:
    """Chosen deliberately: GET /events and /rooms/{id}/initialSync were removed from the
    spec's current version and no client in use needs them; unknown calls are 404
    M_UNRECOGNIZED, which clients treat as "not supported"."""
    room_id = create_room(alice)
    for path in ("events", f"rooms/{q(room_id)}/initialSync", "initialSync"):
        resp = alice.get(path)
        assert resp.status == 404, (path, resp)
        assert resp.body["errcode"] == "M_UNRECOGNIZED"


def test_ignored_users_never_reach_the_ignorer(
    alice: Client, bob: Client, server: ServerProcess
) -> None:
    carol = new_user(server)
    room_id = create_room(alice)
    join(bob, room_id)
    join(carol, room_id)
    ignore = {"ignored_users": {bob.user_id: {}}}
    resp = alice.put(f"user/{q(alice.user_id or '')}/account_data/m.ignored_user_list", ignore)
    assert resp.status == 200, resp
    for who, text in ((bob, f"from bob {alice.user_id}"), (carol, f"from carol {alice.user_id}")):
        sent = who.put(f"rooms/{q(room_id)}/send/m.room.message/{text[:9].replace(' ', '')}",
                       {"msgtype": "m.text", "body": text})  # fmt: skip
        assert sent.status == 200, sent
    carol_event = sent.body["event_id"]

    def bodies(events: list[dict[str, object]]) -> set[object]:
        return {e.get("content", {}).get("body") for e in events}  # type: ignore[union-attr]

    timeline = alice.get("sync", params={"timeout": "0"}).body["rooms"]["join"][room_id]
    seen = bodies(timeline["timeline"]["events"])
    assert f"from carol {alice.user_id}" in seen and f"from bob {alice.user_id}" not in seen
    messages = alice.get(f"rooms/{q(room_id)}/messages", params={"dir": "b"}).body["chunk"]
    assert f"from bob {alice.user_id}" not in bodies(messages)
    context = alice.get(f"rooms/{q(room_id)}/context/{q(carol_event)}").body
    assert f"from bob {alice.user_id}" not in bodies(context["events_before"])
    search = alice.post("search", {"search_categories": {"room_events": {"search_term": "bob"}}})
    results = search.body["search_categories"]["room_events"]["results"]
    assert all(r["result"]["sender"] != bob.user_id for r in results)
    notifications = alice.get("notifications").body["notifications"]
    assert all(n["event"]["sender"] != bob.user_id for n in notifications)
    # Bob's invites never arrive either; carol's do.
    from_bob = create_room(bob, preset="private_chat")
    assert bob.post(f"rooms/{q(from_bob)}/invite", {"user_id": alice.user_id}).status == 200
    from_carol = create_room(carol, preset="private_chat")
    assert carol.post(f"rooms/{q(from_carol)}/invite", {"user_id": alice.user_id}).status == 200
    invites = alice.get("sync", params={"timeout": "0"}).body["rooms"]["invite"]
    assert from_carol in invites and from_bob not in invites
    bad = alice.put(f"user/{q(alice.user_id or '')}/account_data/m.ignored_user_list",
                    {"ignored_users": ["not", "an", "object"]})  # fmt: skip
    assert bad.status == 400


def test_relations_recurse_and_to(alice: Client) -> None:
    room_id = create_room(alice)

    def send(body: str, **relates: object) -> str:
        content: dict[str, object] = {"msgtype": "m.text", "body": body}
        if relates:
            content["m.relates_to"] = relates
        resp = alice.put(f"rooms/{q(room_id)}/send/m.room.message/{body.replace(' ', '')}",
                         content)  # fmt: skip
        assert resp.status == 200, resp
        return str(resp.body["event_id"])

    root = send("root")
    reply = send("in thread", rel_type="m.thread", event_id=root)
    edit = send("edit of reply", rel_type="m.replace", event_id=reply)
    path = f"/_matrix/client/v1/rooms/{q(room_id)}/relations/{q(root)}"
    flat = alice.get(path).body
    assert [e["event_id"] for e in flat["chunk"]] == [reply]
    deep = alice.get(path, params={"recurse": "true"}).body
    assert {e["event_id"] for e in deep["chunk"]} == {reply, edit}
    assert deep["recursion_depth"] == 3
    only_edits = alice.get(path + "/m.replace", params={"recurse": "true"}).body
    assert [e["event_id"] for e in only_edits["chunk"]] == [edit]
    # "to" stops the page: a token just after the reply leaves only the edit.
    token = alice.get(f"rooms/{q(room_id)}/messages", params={"dir": "b", "limit": "1"}).body
    upto = alice.get(path, params={"recurse": "true", "to": token["end"]}).body
    assert [e["event_id"] for e in upto["chunk"]] == [edit]


def test_search_sender_filter_applies_before_paging(alice: Client, bob: Client) -> None:
    room_id = create_room(alice)
    join(bob, room_id)
    word = "zebra" + alice.user_id[1:7]  # type: ignore[index]
    for i in range(6):
        alice.put(f"rooms/{q(room_id)}/send/m.room.message/a{i}",
                  {"msgtype": "m.text", "body": f"{word} from alice {i}"})  # fmt: skip
    bob.put(f"rooms/{q(room_id)}/send/m.room.message/b0",
            {"msgtype": "m.text", "body": f"{word} from bob"})  # fmt: skip
    body = {"search_categories": {"room_events": {
        "search_term": word, "order_by": "recent",
        "filter": {"senders": [bob.user_id], "limit": 3}}}}  # fmt: skip
    found = alice.post("search", body).body["search_categories"]["room_events"]
    assert [r["result"]["sender"] for r in found["results"]] == [bob.user_id]
    assert found["count"] == 1


def test_unused_media_reservations_expire(server_factory: Callable[..., ServerProcess]) -> None:
    import time

    server = server_factory({"media": {"unused_expires_after": "1s"}})
    user = new_user(server)
    created = user.post("/_matrix/media/v1/create", {})
    assert created.status == 200, created
    media_id = created.body["content_uri"].rsplit("/", 1)[1]
    assert created.body["unused_expires_at"] - int(time.time() * 1000) <= 1500
    time.sleep(1.2)
    late = user.request("PUT", f"/_matrix/media/v3/upload/{q(server.server_name)}/{q(media_id)}",
                        raw=b"late bytes", headers={"Content-Type": "text/plain"})  # fmt: skip
    assert late.status == 404, late


def test_dehydrated_device_receives_to_device_messages(alice: Client, bob: Client) -> None:
    prefix = "/_matrix/client/unstable/org.matrix.msc3814.v1/dehydrated_device"
    assert alice.get(prefix).status == 404
    data = {"algorithm": "org.matrix.msc3814.v2", "device_pickle": "opaque-ciphertext"}
    put = alice.put(prefix, {"device_id": "DEHYDRATED1", "device_data": data,
                             "initial_device_display_name": "offline keys"})  # fmt: skip
    assert put.status == 200 and put.body == {"device_id": "DEHYDRATED1"}
    got = alice.get(prefix).body
    assert got == {"device_id": "DEHYDRATED1", "device_data": data}
    devices = {d["device_id"] for d in alice.get("devices").body["devices"]}
    assert "DEHYDRATED1" in devices
    from tests.test_shared_secret_registration import shared_secret_register

    admin = shared_secret_register(alice.server, admin=True)
    listed = admin.get(f"/_synapse/admin/v2/users/{q(alice.user_id or '')}/devices").body
    flags = {d["device_id"]: d["dehydrated"] for d in listed["devices"]}
    assert flags["DEHYDRATED1"] is True and not any(
        v for k, v in flags.items() if k != "DEHYDRATED1"
    )
    messages = {alice.user_id: {"DEHYDRATED1": {"ciphertext": "k1"}}}
    sent = bob.put("sendToDevice/m.room_key/txn1", {"messages": messages})
    assert sent.status == 200, sent
    events = alice.post(f"{prefix}/DEHYDRATED1/events", {})
    assert events.status == 200, events
    assert [e["content"] for e in events.body["events"]] == [{"ciphertext": "k1"}]
    after = alice.post(f"{prefix}/DEHYDRATED1/events",
                       {"next_batch": events.body["next_batch"]})  # fmt: skip
    assert after.body["events"] == []
    # A new dehydrated device replaces the old one, which is gone with its messages.
    alice.put(prefix, {"device_id": "DEHYDRATED2", "device_data": data})
    devices = {d["device_id"] for d in alice.get("devices").body["devices"]}
    assert "DEHYDRATED1" not in devices and "DEHYDRATED2" in devices
    assert alice.post(f"{prefix}/DEHYDRATED1/events", {}).status == 404
    assert bob.get(prefix).status == 404  # one's own only
    deleted = alice.request("DELETE", prefix)
    assert deleted.status == 200 and deleted.body == {"device_id": "DEHYDRATED2"}
    assert alice.get(prefix).status == 404
