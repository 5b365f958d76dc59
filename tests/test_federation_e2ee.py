"""End-to-end encryption across two of our servers with real olm clients (matrix-nio):
keys queried and claimed through the other server, to-device messages carried as EDUs,
device-list changes announced, and history decrypted on both sides."""

from __future__ import annotations

import tempfile

import nio

from tests.harness import ServerProcess, new_user
from tests.test_e2ee_private import MEGOLM, housekeeping, logged_in, receive_bodies, sync_once


async def test_encrypted_conversation_across_servers(
    servers: tuple[ServerProcess, ServerProcess],
) -> None:
    hs1, hs2 = servers
    with tempfile.TemporaryDirectory() as store_a, tempfile.TemporaryDirectory() as store_b:
        _, alice = await logged_in(hs1, store_a)
        _, bob = await logged_in(hs2, store_b)
        try:
            for client in (alice, bob):
                first = await client.sync(timeout=0, full_state=True)
                assert isinstance(first, nio.SyncResponse), first
                await housekeeping(client)
            created = await alice.room_create(
                invite=[bob.user_id],
                initial_state=[
                    {"type": "m.room.encryption", "state_key": "", "content": {"algorithm": MEGOLM}}
                ],
            )
            assert isinstance(created, nio.RoomCreateResponse), created
            room_id = created.room_id
            for _ in range(20):
                await sync_once(bob)
                if room_id in bob.invited_rooms:
                    break
            joined = await bob.join(room_id)
            assert isinstance(joined, nio.JoinResponse), joined
            for _ in range(3):
                await sync_once(alice)
                await sync_once(bob)
            assert alice.rooms[room_id].encrypted and bob.rooms[room_id].encrypted

            # Alice's client must learn bob's device from hs2 (keys/query through hs1).
            assert bob.device_id in alice.device_store[bob.user_id]
            sent = await alice.room_send(
                room_id, "m.room.message", {"msgtype": "m.text", "body": "secret from hs1"},
                ignore_unverified_devices=True,
            )  # fmt: skip
            assert isinstance(sent, nio.RoomSendResponse), sent
            await receive_bodies(bob, room_id, {"secret from hs1"})
            await sync_once(alice)
            sent = await bob.room_send(
                room_id, "m.room.message", {"msgtype": "m.text", "body": "secret from hs2"},
                ignore_unverified_devices=True,
            )  # fmt: skip
            assert isinstance(sent, nio.RoomSendResponse), sent
            await receive_bodies(alice, room_id, {"secret from hs2"})

            # A new device of bob's is noticed on hs1 and gets the next message's keys.
            with tempfile.TemporaryDirectory() as store_c:
                config = nio.AsyncClientConfig(encryption_enabled=True, store_sync_tokens=True)
                phone = nio.AsyncClient(hs2.base_url, bob.user_id, store_path=store_c,
                                        config=config)  # fmt: skip
                try:
                    login = await phone.login("correct horse battery staple",
                                              device_name="bob's phone")  # fmt: skip
                    assert isinstance(login, nio.LoginResponse), login
                    await phone.sync(timeout=0, full_state=True)
                    await housekeeping(phone)
                    for _ in range(20):
                        await sync_once(alice)
                        if phone.device_id in alice.device_store[bob.user_id]:
                            break
                    assert phone.device_id in alice.device_store[bob.user_id]
                    sent = await alice.room_send(
                        room_id, "m.room.message",
                        {"msgtype": "m.text", "body": "for both of bob's devices"},
                        ignore_unverified_devices=True,
                    )  # fmt: skip
                    assert isinstance(sent, nio.RoomSendResponse), sent
                    await receive_bodies(phone, room_id, {"for both of bob's devices"})
                finally:
                    await phone.close()
        finally:
            await alice.close()
            await bob.close()


def test_remote_keys_and_unreachable_servers(servers: tuple[ServerProcess, ServerProcess]) -> None:
    hs1, hs2 = servers
    alice, bob = new_user(hs1), new_user(hs2)
    resp = alice.post("keys/query", {"device_keys": {bob.user_id: [],
                      "@nobody:unreachable.invalid": []}, "timeout": 3000})  # fmt: skip
    assert resp.status == 200, resp
    assert bob.user_id in resp.body["device_keys"]
    assert "unreachable.invalid" in resp.body["failures"]
    claim = alice.post("keys/claim", {"one_time_keys": {
        "@nobody:unreachable.invalid": {"DEV": "signed_curve25519"}}, "timeout": 3000})  # fmt: skip
    assert claim.status == 200, claim
    assert "unreachable.invalid" in claim.body["failures"]


def test_remote_media_and_thumbnails(servers: tuple[ServerProcess, ServerProcess]) -> None:
    from tests.test_media import download, png, size_of, thumbnail, upload

    hs1, hs2 = servers
    alice, bob = new_user(hs1), new_user(hs2)
    original = png((320, 240))
    mxc = upload(alice, original, "image/png", "holiday.png")
    fetched = download(bob, mxc)
    assert fetched.status == 200, fetched
    assert fetched.body == original
    assert fetched.headers["Content-Type"] == "image/png"
    assert "holiday.png" in fetched.headers["Content-Disposition"]
    again = download(bob, mxc)  # from bob's server's copy now
    assert again.body == original
    thumb = thumbnail(bob, mxc, 32, 32, "scale")
    assert thumb.status == 200, thumb
    assert max(size_of(thumb.body)) <= 96
    missing = download(bob, mxc[:-3] + "zzz")
    assert missing.status == 404, missing
    legacy = download(bob, mxc, legacy=True)
    assert legacy.status == 404  # the unauthenticated routes stay closed unless configured


def test_user_directory_finds_remote_users_sharing_a_room(
    servers: tuple[ServerProcess, ServerProcess],
) -> None:
    from tests.harness import create_room, q

    hs1, hs2 = servers
    alice, bob = new_user(hs1), new_user(hs2)
    assert bob.put(f"profile/{q(bob.user_id or '')}/displayname",
                   {"displayname": "Bob Faraway"}).status == 200  # fmt: skip
    lonely = new_user(hs1)
    room_id = create_room(alice)
    assert bob.post(f"join/{q(room_id)}", {}, params={"via": hs1.server_name}).status == 200
    found = alice.post("user_directory/search", {"search_term": "faraway"})
    assert found.status == 200, found
    assert [r["user_id"] for r in found.body["results"]] == [bob.user_id]
    assert found.body["results"][0]["display_name"] == "Bob Faraway"
    nothing = lonely.post("user_directory/search", {"search_term": "faraway"})
    assert nothing.body["results"] == []
