"""A real client library, matrix-nio, syncing against the server: invites, joins, messages,
typing notifications and read receipts, each observed through the other client's /sync."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable

import nio
import pytest

from tests.harness import PASSWORD, ServerProcess, new_user


async def logged_in(server: ServerProcess) -> nio.AsyncClient:
    user = new_user(server)
    assert user.user_id is not None
    client = nio.AsyncClient(server.base_url, user.user_id)
    login = await client.login(PASSWORD, device_name="nio sync test")
    assert isinstance(login, nio.LoginResponse), login
    return client


@pytest.fixture
async def pair(server: ServerProcess) -> AsyncIterator[tuple[nio.AsyncClient, nio.AsyncClient]]:
    alice = await logged_in(server)
    bob = await logged_in(server)
    try:
        yield alice, bob
    finally:
        await alice.close()
        await bob.close()


async def sync_until(
    client: nio.AsyncClient,
    predicate: Callable[[nio.SyncResponse], bool],
    deadline: float = 10.0,
) -> nio.SyncResponse:
    """Long-poll with nio (it passes its own next_batch) until ``predicate`` holds."""
    end = time.monotonic() + deadline
    while True:
        response = await client.sync(timeout=2000)
        assert isinstance(response, nio.SyncResponse), response
        if predicate(response):
            return response
        assert time.monotonic() < end, f"nothing matching arrived: {response}"


def messages_in(response: nio.SyncResponse, room_id: str) -> list[nio.RoomMessageText]:
    room = response.rooms.join.get(room_id)
    if room is None:
        return []
    return [e for e in room.timeline.events if isinstance(e, nio.RoomMessageText)]


async def test_nio_invite_join_messages_typing_receipts(
    pair: tuple[nio.AsyncClient, nio.AsyncClient],
) -> None:
    alice, bob = pair
    first = await alice.sync(timeout=0)
    assert isinstance(first, nio.SyncResponse), first
    first = await bob.sync(timeout=0)
    assert isinstance(first, nio.SyncResponse), first
    assert bob.next_batch == first.next_batch

    created = await alice.room_create(name="nio room", invite=[bob.user_id])
    assert isinstance(created, nio.RoomCreateResponse), created
    room_id = created.room_id

    # Bob hears of the invite through sync, with the room's stripped state.
    await sync_until(bob, lambda r: room_id in r.rooms.invite)
    assert room_id in bob.invited_rooms
    assert bob.invited_rooms[room_id].name == "nio room"

    joined = await bob.join(room_id)
    assert isinstance(joined, nio.JoinResponse), joined
    await sync_until(bob, lambda r: room_id in r.rooms.join)
    assert room_id in bob.rooms
    assert room_id not in bob.invited_rooms

    # Alice sees bob join, then they exchange messages.
    await sync_until(alice, lambda r: bob.user_id in alice.rooms[room_id].users)
    sent = await alice.room_send(
        room_id, "m.room.message", {"msgtype": "m.text", "body": "hello bob"}
    )
    assert isinstance(sent, nio.RoomSendResponse), sent
    response = await sync_until(bob, lambda r: bool(messages_in(r, room_id)))
    [message] = messages_in(response, room_id)
    assert message.body == "hello bob"
    assert message.sender == alice.user_id
    assert message.event_id == sent.event_id

    reply = await bob.room_send(
        room_id, "m.room.message", {"msgtype": "m.text", "body": "hello alice"}
    )
    assert isinstance(reply, nio.RoomSendResponse), reply
    response = await sync_until(
        alice, lambda r: any(m.body == "hello alice" for m in messages_in(r, room_id))
    )
    [message] = [m for m in messages_in(response, room_id) if m.body == "hello alice"]
    assert message.sender == bob.user_id
    assert message.event_id == reply.event_id
    assert alice.rooms[room_id].member_count == 2

    # Typing: bob sees alice typing, then stop.
    typing = await alice.room_typing(room_id, True, timeout=30_000)
    assert isinstance(typing, nio.RoomTypingResponse), typing
    await sync_until(bob, lambda r: alice.user_id in bob.rooms[room_id].typing_users)
    stopped = await alice.room_typing(room_id, False)
    assert isinstance(stopped, nio.RoomTypingResponse), stopped
    await sync_until(bob, lambda r: bob.rooms[room_id].typing_users == [])

    # Read markers: alice sees bob's receipt; bob's fully-read marker is his alone.
    markers = await bob.room_read_markers(room_id, reply.event_id, reply.event_id)
    assert isinstance(markers, nio.RoomReadMarkersResponse), markers

    def has_receipt(response: nio.SyncResponse) -> bool:
        room = response.rooms.join.get(room_id)
        if room is None:
            return False
        return any(
            isinstance(event, nio.ReceiptEvent)
            and any(
                r.user_id == bob.user_id
                and r.event_id == reply.event_id
                and r.receipt_type == "m.read"
                for r in event.receipts
            )
            for event in room.ephemeral
        )

    await sync_until(alice, has_receipt)
    receipt = alice.rooms[room_id].read_receipts[bob.user_id]
    assert receipt.event_id == reply.event_id
    assert receipt.receipt_type == "m.read"
    assert alice.rooms[room_id].fully_read_marker is None

    await sync_until(bob, lambda r: bob.rooms[room_id].fully_read_marker == reply.event_id)
