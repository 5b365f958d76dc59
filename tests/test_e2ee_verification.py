"""Interactive SAS verification between two real olm clients, relayed by the server.

Two matrix-nio clients (vodozemac underneath) share an encrypted room. Alice starts an
``m.sas.v1`` verification of Bob's device; the whole exchange (start, accept, key, key,
mac, mac) travels as to-device messages: ``PUT /sendToDevice`` in, ``/sync`` ``to_device``
out. The server only relays them and serves ``/keys/query``, but any loss, duplication,
reordering or mangling makes the SAS fail (commitment or MAC mismatch, or a stalled
exchange). Both sides must derive the same emoji and decimals, and after the MACs each
marks the other's device verified. Then messages are sent without
``ignore_unverified_devices`` (refused before the verification, accepted after it) and
each side decrypts the other's as coming from a verified device.
"""

from __future__ import annotations

import secrets
import tempfile
import time
from collections.abc import Callable
from typing import Any

import nio
import pytest

from tests.harness import PASSWORD, ServerProcess, new_user

MEGOLM = "m.megolm.v1.aes-sha2"
MAX_ROUNDS = 30  # sync rounds per phase; each round is at most ~0.3 s of long-polling
SYNC_TIMEOUT_MS = 300


class Peer:
    """An olm client plus a record of the to-device events it received, in order."""

    def __init__(self, name: str, client: nio.AsyncClient) -> None:
        self.name = name
        self.client = client
        self.to_device: list[tuple[str, str | None, str]] = []

    @property
    def user_id(self) -> str:
        return self.client.user_id

    @property
    def device_id(self) -> str:
        return str(self.client.device_id)

    async def sync(self) -> nio.SyncResponse:
        client = self.client
        response = await client.sync(timeout=SYNC_TIMEOUT_MS)
        assert isinstance(response, nio.SyncResponse), f"{self.name} sync failed: {response}"
        for event in response.to_device_events:
            content = event.source.get("content", {})
            self.to_device.append(
                (
                    event.source.get("type", type(event).__name__),
                    content.get("transaction_id"),
                    event.sender,
                )
            )
        # Housekeeping, as an E2EE client does after every sync.
        if client.should_upload_keys:
            assert isinstance(await client.keys_upload(), nio.KeysUploadResponse)
        if client.should_query_keys:
            assert isinstance(await client.keys_query(), nio.KeysQueryResponse)
        if client.should_claim_keys:
            users = client.get_users_for_key_claiming()
            assert isinstance(await client.keys_claim(users), nio.KeysClaimResponse)
        for sent in await client.send_to_device_messages():
            assert isinstance(sent, nio.ToDeviceResponse), f"{self.name} sendToDevice: {sent}"
        return response

    def sas(self, transaction_id: str) -> Any:
        return self.client.key_verifications.get(transaction_id)

    def describe(self) -> str:
        verifications = {
            tx: f"state={sas.state} canceled={sas.canceled} "
            f"cancel={getattr(sas, 'cancel_code', None)}/{getattr(sas, 'cancel_reason', None)} "
            f"verified={sas.verified}"
            for tx, sas in self.client.key_verifications.items()
        }
        return (
            f"{self.name} ({self.user_id} {self.device_id}) received to-device "
            f"{self.to_device}; verifications {verifications}"
        )


async def pump(peers: list[Peer], done: Callable[[], bool], what: str) -> None:
    """Sync both sides (relaying their to-device messages) until ``done()``, bounded."""
    for _ in range(MAX_ROUNDS):
        if done():
            return
        for peer in peers:
            await peer.sync()
    if not done():
        pytest.fail(
            f"after {MAX_ROUNDS} sync rounds, still waiting for: {what}\n"
            + "\n".join(peer.describe() for peer in peers)
        )


async def logged_in(server: ServerProcess, name: str, store: str) -> Peer:
    http = new_user(server, f"{name}{secrets.token_hex(4)}")
    assert http.user_id
    config = nio.AsyncClientConfig(encryption_enabled=True, store_sync_tokens=True)
    client = nio.AsyncClient(server.base_url, http.user_id, store_path=store, config=config)
    login = await client.login(PASSWORD, device_name=f"{name}'s verifying device")
    assert isinstance(login, nio.LoginResponse), login
    return Peer(name, client)


def knows_device(peer: Peer, other: Peer) -> bool:
    return other.device_id in peer.client.device_store[other.user_id]


async def receive_verified(receiver: Peer, room_id: str, body: str, sender: Peer) -> None:
    """Sync the receiver until ``body`` decrypts; it must come from a verified device."""
    undecrypted: list[str] = []
    end = time.monotonic() + 10
    while time.monotonic() < end:
        response = await receiver.sync()
        room = response.rooms.join.get(room_id)
        for event in room.timeline.events if room else []:
            if isinstance(event, nio.MegolmEvent):
                undecrypted.append(event.session_id)
            elif isinstance(event, nio.RoomMessageText) and event.body == body:
                assert event.decrypted, "the message arrived unencrypted"
                assert event.sender == sender.user_id
                assert event.verified, (
                    f"{receiver.name} decrypted {body!r} but not as from a verified device"
                )
                return
    pytest.fail(
        f"{receiver.name} never decrypted {body!r}; undecryptable sessions {undecrypted}\n"
        + receiver.describe()
    )


async def test_sas_verification_then_verified_messages(server: ServerProcess) -> None:
    with tempfile.TemporaryDirectory() as store_a, tempfile.TemporaryDirectory() as store_b:
        alice = await logged_in(server, "alice", store_a)
        bob = await logged_in(server, "bob", store_b)
        peers = [alice, bob]
        try:
            await run_verification(server, alice, bob, peers)
        finally:
            await alice.client.close()
            await bob.client.close()


async def run_verification(
    server: ServerProcess, alice: Peer, bob: Peer, peers: list[Peer]
) -> None:
    for peer in peers:
        first = await peer.client.sync(timeout=0, full_state=True)
        assert isinstance(first, nio.SyncResponse), first
        await peer.sync()

    # A shared encrypted room, so that each tracks (and queries) the other's devices.
    created = await alice.client.room_create(
        invite=[bob.user_id],
        initial_state=[
            {"type": "m.room.encryption", "state_key": "", "content": {"algorithm": MEGOLM}}
        ],
    )
    assert isinstance(created, nio.RoomCreateResponse), created
    room_id = created.room_id
    await pump([bob], lambda: room_id in bob.client.invited_rooms, "bob sees the invite")
    assert isinstance(await bob.client.join(room_id), nio.JoinResponse)
    await pump(
        peers,
        lambda: (
            room_id in alice.client.rooms
            and room_id in bob.client.rooms
            and bob.user_id in alice.client.rooms[room_id].users
            and knows_device(alice, bob)
            and knows_device(bob, alice)
        ),
        "both in the room, each with the other's device from /keys/query",
    )
    assert alice.client.rooms[room_id].encrypted and bob.client.rooms[room_id].encrypted
    bob_device = alice.client.device_store[bob.user_id][bob.device_id]
    alice_device = bob.client.device_store[alice.user_id][alice.device_id]
    assert not bob_device.verified and not alice_device.verified

    # Before verification, a send that does not ignore unverified devices is refused.
    with pytest.raises(nio.OlmUnverifiedDeviceError):
        await alice.client.room_send(
            room_id, "m.room.message", {"msgtype": "m.text", "body": "too early"}
        )

    # Alice starts SAS verification of Bob's device.
    started = await alice.client.start_key_verification(bob_device)
    assert isinstance(started, nio.ToDeviceResponse), started
    assert len(alice.client.key_verifications) == 1, alice.client.key_verifications
    (tx,) = alice.client.key_verifications
    alice_sas = alice.sas(tx)
    assert alice_sas.we_started_it

    await pump([bob], lambda: bob.sas(tx) is not None, "bob receives m.key.verification.start")
    bob_sas = bob.sas(tx)
    assert not bob_sas.we_started_it and not bob_sas.canceled, bob.describe()
    assert bob_sas.other_olm_device.id == alice.device_id
    assert ("m.key.verification.start", tx, alice.user_id) in bob.to_device

    # Bob accepts; accept -> alice's key -> bob's key, all relayed by the server.
    accepted = await bob.client.accept_key_verification(tx)
    assert isinstance(accepted, nio.ToDeviceResponse), accepted
    await pump(
        peers,
        lambda: (
            alice_sas.canceled
            or bob_sas.canceled
            or (alice_sas.established_sas is not None and bob_sas.established_sas is not None)
        ),
        "the accept and both public keys to be exchanged",
    )
    assert not alice_sas.canceled and not bob_sas.canceled, (
        f"verification canceled during key exchange\n{alice.describe()}\n{bob.describe()}"
    )

    # Both compute the same short authentication string.
    alice_emoji, bob_emoji = alice_sas.get_emoji(), bob_sas.get_emoji()
    alice_decimals, bob_decimals = alice_sas.get_decimals(), bob_sas.get_decimals()
    assert len(alice_emoji) == 7 and len(alice_decimals) == 3
    assert alice_emoji == bob_emoji, (alice_emoji, bob_emoji)
    assert alice_decimals == bob_decimals, (alice_decimals, bob_decimals)
    assert all(1000 <= d <= 9191 for d in alice_decimals), alice_decimals

    # Both confirm; the MACs cross through the server.
    for peer in peers:
        confirmed = await peer.client.confirm_short_auth_string(tx)
        assert isinstance(confirmed, nio.ToDeviceResponse), confirmed
    await pump(
        peers,
        lambda: alice_sas.canceled or bob_sas.canceled or (alice_sas.verified and bob_sas.verified),
        "both MACs to arrive and verify",
    )
    assert alice_sas.verified and bob_sas.verified, f"{alice.describe()}\n{bob.describe()}"
    for peer in peers:
        macs = [e for e in peer.to_device if e[0] == "m.key.verification.mac" and e[1] == tx]
        assert len(macs) == 1, peer.describe()
        cancels = [e for e in peer.to_device if e[0] == "m.key.verification.cancel"]
        assert not cancels, peer.describe()

    # Each device store now marks the other's device verified.
    assert alice.client.device_store[bob.user_id][bob.device_id].verified is True
    assert bob.client.device_store[alice.user_id][alice.device_id].verified is True
    assert alice.client.olm.is_device_verified(bob_device)
    assert bob.client.olm.is_device_verified(alice_device)

    # The sequence each saw is exactly the SAS protocol, in order, with nothing lost.
    def verification_events(peer: Peer) -> list[str]:
        return [e[0] for e in peer.to_device if e[1] == tx]

    assert verification_events(bob) == [
        "m.key.verification.start",
        "m.key.verification.key",
        "m.key.verification.mac",
    ], bob.describe()
    assert verification_events(alice) == [
        "m.key.verification.accept",
        "m.key.verification.key",
        "m.key.verification.mac",
    ], alice.describe()

    # Encrypted messages, with no unverified device to ignore, both ways.
    tag = secrets.token_hex(4)
    to_bob = f"verified hello to bob {tag}"
    sent = await alice.client.room_send(
        room_id, "m.room.message", {"msgtype": "m.text", "body": to_bob}
    )
    assert isinstance(sent, nio.RoomSendResponse), sent
    await receive_verified(bob, room_id, to_bob, alice)

    to_alice = f"verified hello to alice {tag}"
    sent = await bob.client.room_send(
        room_id, "m.room.message", {"msgtype": "m.text", "body": to_alice}
    )
    assert isinstance(sent, nio.RoomSendResponse), sent
    await receive_verified(alice, room_id, to_alice, bob)
