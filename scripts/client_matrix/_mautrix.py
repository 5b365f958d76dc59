"""The scenario with mautrix-python: ``mautrix.client.Client`` with an ``OlmMachine`` over an
in-memory crypto store.

mautrix has cross-signing and secret storage (``OlmMachine.generate_recovery_key``,
``verify_with_recovery_key``, ``OlmMachine.ssss``) but no registration call and no key
backup. Registration and the backup go through mautrix's own HTTP plumbing
(``HTTPAPI.request``); the backup's session data is encrypted with python-olm and opened on
restore with the project's keybackup/client_crypto.py. Results that went around the library
say so.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import time
from dataclasses import dataclass, field
from typing import Any, cast
from urllib.parse import quote, urlencode

from mautrix.api import Method, Path, PathBuilder
from mautrix.client import Client
from mautrix.client.state_store.memory import MemoryStateStore
from mautrix.crypto import OlmMachine
from mautrix.crypto.cross_signing_key import CrossSigningPrivateKeys, CrossSigningSeeds
from mautrix.crypto.sessions import InboundGroupSession
from mautrix.crypto.store import MemoryCryptoStore
from mautrix.crypto.store import StateStore as CryptoStateStore
from mautrix.errors import MatrixRequestError
from mautrix.types import (
    CrossSigner,
    CrossSigningUsage,
    EncryptedEvent,
    EventType,
    IdentityKey,
    Membership,
    PaginationDirection,
    RoomID,
    SessionID,
    SigningKey,
    SyncToken,
    UserID,
)
from mautrix.util import background_task

from keybackup.client_crypto import backup_public_key, decrypt_from_backup
from scripts.client_matrix._common import (
    BACKUP_ALGORITHM,
    CLIENT_PREFIX,
    MEGOLM,
    HttpFailure,
    JsonDict,
    StepFailed,
    Steps,
    backup_session_data,
    canonical_json,
    localpart,
    password_auth,
    uia_session,
)

DEVICE_NAME = "client-matrix mautrix"


def q(value: str) -> str:
    return quote(value, safe="")


class CryptoMemoryStateStore(MemoryStateStore, CryptoStateStore):  # type: ignore[misc]
    """The client's in-memory state store, plus what the OlmMachine asks of a state store."""

    async def find_shared_rooms(self, user_id: UserID) -> list[RoomID]:
        return [
            room_id
            for room_id, members in self.members.items()
            if self.encryption.get(room_id) is not None
            and user_id in members
            and members[user_id].membership in (Membership.JOIN, Membership.INVITE)
        ]


class CryptoStore(MemoryCryptoStore):
    """mautrix's in-memory crypto store, with two of its bugs (mautrix 0.21.1) fixed: once a
    user's cross-signing key changes (a reset, as in this scenario), put_cross_signing_key
    assigns to a NamedTuple field (AttributeError: can't set attribute) and
    drop_signatures_by_key takes len(None) when the old key had signed nothing (TypeError)."""

    async def put_cross_signing_key(
        self, user_id: UserID, usage: CrossSigningUsage, key: SigningKey
    ) -> None:
        current = self._cross_signing_keys.get(user_id, {}).get(usage)
        if current is None:
            await super().put_cross_signing_key(user_id, usage, key)
        else:
            self._cross_signing_keys[user_id][usage] = current._replace(key=key)

    async def drop_signatures_by_key(self, signer: CrossSigner) -> int:
        return len(self._signatures.pop(signer, {}))


@dataclass
class Party:
    """One logged-in device: client, OlmMachine and what its syncs brought."""

    client: Client
    machine: OlmMachine
    state_store: CryptoMemoryStateStore
    encrypted: dict[str, JsonDict] = field(default_factory=dict)  # event ID -> raw event
    invited: set[str] = field(default_factory=set)

    @property
    def user_id(self) -> UserID:
        return self.client.mxid


def error_body(error: MatrixRequestError) -> Any:
    text = getattr(error, "text", None)
    if text:
        try:
            return json.loads(text)
        except ValueError:
            return text
    return {"errcode": error.errcode, "error": error.message}


async def call(
    client: Client,
    method: Method,
    path: PathBuilder,
    body: Any = None,
    query: dict[str, str] | None = None,
) -> Any:
    """A request through mautrix's HTTP plumbing; HttpFailure records what the server said."""
    try:
        return await client.api.request(method, path, body, query_params=query)
    except MatrixRequestError as e:
        shown = str(path) + ("?" + urlencode(query) if query else "")
        raise HttpFailure(str(method), shown, e.http_status, error_body(e)) from None


async def drain_background_tasks(timeout: float = 20) -> None:
    """Wait for the handlers mautrix ran in the background for a sync (state updates,
    to-device decryption, device-list fetches), as a long-running client would."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        pending = {t for t in background_task._tasks if not t.done()}
        if not pending:
            return
        await asyncio.wait(pending, timeout=max(0.1, end - time.monotonic()))


def uia_error_session(error: MatrixRequestError) -> str:
    return uia_session(error.http_status, error_body(error), "m.login.password")


class MautrixScenario:
    def __init__(self, base_url: str, steps: Steps) -> None:
        self.base_url = base_url.rstrip("/")
        self.steps = steps
        self.password = "pw-" + secrets.token_hex(8)
        self.clients: list[Client] = []
        self.alice: Party | None = None
        self.bob: Party | None = None
        self.room_id = RoomID("")
        self.sent: dict[str, str] = {}  # body -> sender
        self.seeds: CrossSigningSeeds | None = None
        self.recovery_key = ""
        self.backup_key = b""
        self.backup_version = ""

    @property
    def a(self) -> Party:
        assert self.alice is not None
        return self.alice

    @property
    def b(self) -> Party:
        assert self.bob is not None
        return self.bob

    async def close(self) -> None:
        await drain_background_tasks(5)
        for client in self.clients:
            await client.api.session.close()

    # Plumbing

    def new_client(self, user_id: str = "") -> Client:
        state_store = CryptoMemoryStateStore()
        client = Client(UserID(user_id), base_url=self.base_url, state_store=state_store)
        self.clients.append(client)
        return client

    async def register_user(self, name: str) -> UserID:
        """mautrix has no registration call: the dummy UIA flow over its HTTPAPI."""
        registrar = self.new_client()
        body: JsonDict = {
            "username": localpart(name),
            "password": self.password,
            "inhibit_login": True,
        }
        try:
            await registrar.api.request(Method.POST, Path.v3.register, body)
        except MatrixRequestError as e:
            session = uia_session(e.http_status, error_body(e), "m.login.dummy")
        else:
            raise StepFailed("POST /register without auth answered 200, not a UIA challenge")
        body["auth"] = {"type": "m.login.dummy", "session": session}
        answer = await call(registrar, Method.POST, Path.v3.register, body)
        return UserID(answer["user_id"])

    async def login(self, user_id: UserID, device_name: str) -> Party:
        client = self.new_client(user_id)
        await client.login(password=self.password, device_name=device_name)
        state_store = client.state_store
        assert isinstance(state_store, CryptoMemoryStateStore)
        crypto_store = CryptoStore(account_id=user_id, pickle_key=secrets.token_hex(8))
        await crypto_store.put_device_id(client.device_id)
        machine = OlmMachine(client, crypto_store, state_store)
        await machine.load()
        client.crypto = machine
        await machine.share_keys()
        party = Party(client, machine, state_store)
        await self.sync(party)
        return party

    async def sync(self, party: Party, timeout_ms: int = 0) -> JsonDict:
        """One /sync, handled by mautrix's syncer as its own sync loop would."""
        client = party.client
        since = await client.sync_store.get_next_batch()
        data: Any = await client.sync(since=since, timeout=timeout_ms)
        await client.sync_store.put_next_batch(SyncToken(data.get("next_batch") or ""))
        rooms = data.get("rooms") or {}
        party.invited |= set(rooms.get("invite") or {})
        for room_id, room in (rooms.get("join") or {}).items():
            for event in (room.get("timeline") or {}).get("events") or []:
                if event.get("type") == "m.room.encrypted":
                    party.encrypted[event["event_id"]] = {**event, "room_id": room_id}
                elif event.get("type") == "m.room.message":
                    raise StepFailed(f"a message arrived unencrypted: {json.dumps(event)}")
        await asyncio.gather(*client.handle_sync(data))
        await drain_background_tasks()
        result: JsonDict = data
        return result

    async def decrypted_bodies(self, party: Party) -> tuple[dict[str, str], list[str]]:
        """Every encrypted event the party saw, decrypted by its OlmMachine: bodies by event
        ID, and the reasons of those that failed."""
        bodies: dict[str, str] = {}
        errors: list[str] = []
        for event_id, raw in party.encrypted.items():
            if raw["room_id"] != self.room_id:
                continue
            try:
                encrypted = EncryptedEvent.deserialize(cast(Any, raw))
                event = await party.machine.decrypt_megolm_event(encrypted)
            except Exception as e:  # report, keep trying on the next sync
                errors.append(f"{event_id}: {type(e).__name__}: {e}")
                continue
            body = getattr(event.content, "body", None)
            if isinstance(body, str):
                bodies[event_id] = body
        return bodies, errors

    async def receive(self, party: Party, wanted: set[str]) -> None:
        end = time.monotonic() + 30
        errors: list[str] = []
        seen: set[str] = set()
        while time.monotonic() < end:
            await self.sync(party, timeout_ms=1000)
            bodies, errors = await self.decrypted_bodies(party)
            seen = set(bodies.values())
            if wanted <= seen:
                return
        raise StepFailed(
            f"{party.user_id} did not decrypt {sorted(wanted - seen)}; errors: {errors}"
        )

    async def publish_cross_signing(
        self, keys: CrossSigningPrivateKeys, auth: JsonDict | None = None
    ) -> None:
        # mautrix's public generate_recovery_key() publishes without UIA auth; this is the
        # method it calls, which takes the auth dict.
        await self.a.machine._publish_cross_signing_keys(keys, auth=auth)

    # Steps

    async def register(self) -> str | None:
        alice_id = await self.register_user("alice")
        bob_id = await self.register_user("bob")
        self.alice = await self.login(alice_id, DEVICE_NAME)
        self.bob = await self.login(bob_id, DEVICE_NAME)
        return None

    async def cross_signing(self) -> str | None:
        # The first upload needs no UIA (spec v1.11) but may ask for it.
        first = CrossSigningSeeds.generate().to_keys()
        try:
            await self.publish_cross_signing(first)
        except MatrixRequestError as e:
            session = uia_error_session(e)
            await self.publish_cross_signing(
                first, password_auth(self.a.user_id, self.password, session)
            )
        # Replacing the keys needs the password.
        self.seeds = CrossSigningSeeds.generate()
        keys = self.seeds.to_keys()
        try:
            await self.publish_cross_signing(keys)
        except MatrixRequestError as e:
            session = uia_error_session(e)
        else:
            raise StepFailed(
                "server replaced the existing master key without UIA: POST "
                f"{CLIENT_PREFIX}/keys/device_signing/upload (new keys) -> 200"
            )
        await self.publish_cross_signing(
            keys, password_auth(self.a.user_id, self.password, session)
        )
        machine = self.a.machine
        await machine.sign_own_device(machine.own_identity)

        answer = await self.a.client.query_keys({self.a.user_id: [self.a.client.device_id]})
        public = keys.public_keys
        master = answer.master_keys.get(self.a.user_id)
        if master is None or public.master_key not in master.keys.values():
            raise StepFailed(f"/keys/query does not show the new master key: {answer}")
        ssk_id = f"ed25519:{public.self_signing_key}"
        device = answer.device_keys[self.a.user_id][self.a.client.device_id]
        if ssk_id not in {str(k) for k in device.signatures.get(self.a.user_id, {})}:
            raise StepFailed(f"the device's self-signing signature is missing: {device}")
        return "mautrix's private _publish_cross_signing_keys(auth=...) for the password UIA"

    async def secret_storage(self) -> str | None:
        machine = self.a.machine
        # A new secret-storage key; the cross-signing seeds stored in it, the keys
        # (re)published, the key made default, the device signed: all by mautrix.
        self.recovery_key = await machine.generate_recovery_key(seeds=self.seeds)
        key_id, key_data = await machine.ssss.get_default_key_data()
        key = key_data.verify_recovery_key(key_id, self.recovery_key)
        self.backup_key = os.urandom(32)
        await machine.ssss.set_encrypted_account_data(
            EventType.MEGOLM_BACKUP_V1, self.backup_key, key
        )
        stored = await machine.ssss.get_decrypted_account_data(EventType.MEGOLM_BACKUP_V1, key)
        if stored != self.backup_key:
            raise StepFailed("the backup key read back from secret storage differs")
        master = await machine.ssss.get_decrypted_account_data(EventType.CROSS_SIGNING_MASTER, key)
        if self.seeds is not None and master != self.seeds.master_key:
            raise StepFailed("the master key read back from secret storage differs")
        return None

    async def encrypted_room(self) -> str | None:
        self.room_id = await self.a.client.create_room(
            invitees=[self.b.user_id],
            initial_state=[
                {"type": "m.room.encryption", "state_key": "", "content": {"algorithm": MEGOLM}}
            ],
        )
        end = time.monotonic() + 30
        while self.room_id not in self.b.invited and time.monotonic() < end:
            await self.sync(self.b, timeout_ms=1000)
        if self.room_id not in self.b.invited:
            raise StepFailed("bob never saw the invite in /sync")
        await self.b.client.join_room_by_id(self.room_id)
        while time.monotonic() < end:
            await self.sync(self.a, timeout_ms=500)
            await self.sync(self.b, timeout_ms=500)
            bob = await self.a.state_store.get_member(self.room_id, self.b.user_id)
            if (
                await self.a.state_store.is_encrypted(self.room_id)
                and await self.b.state_store.is_encrypted(self.room_id)
                and bob is not None
                and bob.membership == Membership.JOIN
            ):
                return None
        raise StepFailed("the room never showed as encrypted with both members to both")

    async def members_before_encrypting(self) -> str | None:
        token = await self.a.client.sync_store.get_next_batch()
        try:
            members = await self.a.client.get_members(
                self.room_id, at=token, not_membership=Membership.LEAVE
            )
        except MatrixRequestError as e:
            path = f"{CLIENT_PREFIX}/rooms/{q(self.room_id)}/members?" + urlencode(
                {"at": token, "not_membership": "leave"}
            )
            raise HttpFailure("GET", path, e.http_status, error_body(e)) from None
        joined = {
            m.state_key
            for m in members
            if getattr(m.content, "membership", None) == Membership.JOIN
        }
        missing = {self.a.user_id, self.b.user_id} - joined
        if missing:
            raise StepFailed(f"/members lacks joined members {sorted(missing)}: {members}")
        return None

    async def send_both_ways(self) -> str | None:
        for sender, receiver in ((self.a, self.b), (self.b, self.a)):
            await self.sync(sender)
            body = f"from {sender.user_id} {secrets.token_hex(6)}"
            await sender.client.send_text(self.room_id, body)
            self.sent[body] = sender.user_id
            await self.receive(receiver, {body})
        return None

    async def key_backup(self) -> str | None:
        party = self.a
        await self.sync(party)
        assert party.machine.account is not None
        public_key = backup_public_key(self.backup_key)
        auth_data: JsonDict = {"public_key": public_key}
        signatures = {
            f"ed25519:{party.client.device_id}": party.machine.account.sign(
                canonical_json(auth_data)
            )
        }
        if self.seeds is not None:
            master = self.seeds.to_keys().master_key
            signatures[f"ed25519:{master.public_key}"] = master.sign(canonical_json(auth_data))
        auth_data["signatures"] = {party.user_id: signatures}
        version = await call(
            party.client,
            Method.POST,
            Path.v3.room_keys.version,
            {"algorithm": BACKUP_ALGORITHM, "auth_data": auth_data},
        )
        self.backup_version = str(version["version"])

        session_ids = {
            raw["content"]["session_id"]
            for raw in party.encrypted.values()
            if raw["room_id"] == self.room_id
        }
        sessions: dict[str, JsonDict] = {}
        for session_id in session_ids:
            session = await party.machine.crypto_store.get_group_session(
                self.room_id, SessionID(session_id)
            )
            if session is None:
                raise StepFailed(f"mautrix's crypto store lacks Megolm session {session_id}")
            index = session.first_known_index
            sessions[session_id] = {
                "first_message_index": index,
                "forwarded_count": len(session.forwarding_chain),
                "is_verified": False,
                "session_data": backup_session_data(
                    public_key,
                    {
                        "algorithm": MEGOLM,
                        "sender_key": session.sender_key,
                        "session_key": session.export_session(index),
                        "sender_claimed_keys": {"ed25519": session.signing_key},
                        "forwarding_curve25519_key_chain": list(session.forwarding_chain),
                    },
                ),
            }
        if len(sessions) < 2:
            raise StepFailed(f"expected alice's and bob's Megolm sessions, saw {sorted(sessions)}")
        query = {"version": self.backup_version}
        upload = {"rooms": {self.room_id: {"sessions": sessions}}}
        answer = await call(party.client, Method.PUT, Path.v3.room_keys.keys, upload, query)
        if answer.get("count") != len(sessions):
            raise StepFailed(f"PUT /room_keys/keys counted {answer}, uploaded {len(sessions)}")
        stored = await call(
            party.client, Method.GET, Path.v3.room_keys.keys[self.room_id], query=query
        )
        if set(stored.get("sessions", {})) != set(sessions):
            raise StepFailed(f"the backup holds {stored}, not the uploaded sessions")
        return (
            "mautrix has no key-backup API: version made and sessions uploaded with mautrix's "
            "HTTPAPI.request + python-olm PkEncryption"
        )

    async def restore_new_device(self) -> str | None:
        party = await self.login(self.a.user_id, DEVICE_NAME + " restore")
        machine = party.machine
        # mautrix: check the recovery key against secret storage, take the cross-signing
        # keys from it and sign this device; then the backup key from secret storage.
        await machine.verify_with_recovery_key(self.recovery_key)
        key_id, key_data = await machine.ssss.get_default_key_data()
        key = key_data.verify_recovery_key(key_id, self.recovery_key)
        backup_key = await machine.ssss.get_decrypted_account_data(EventType.MEGOLM_BACKUP_V1, key)

        version = await call(party.client, Method.GET, Path.v3.room_keys.version)
        if version.get("auth_data", {}).get("public_key") != backup_public_key(backup_key):
            raise StepFailed(f"the backup key from secret storage does not open {version}")
        query = {"version": str(version["version"])}
        keys = await call(party.client, Method.GET, Path.v3.room_keys.keys, query=query)
        imported = 0
        for room_id, room in (keys.get("rooms") or {}).items():
            for session_id, data in (room.get("sessions") or {}).items():
                session = decrypt_from_backup(backup_key, data["session_data"])
                inbound = InboundGroupSession.import_session(
                    session_key=session["session_key"],
                    signing_key=SigningKey(session["sender_claimed_keys"]["ed25519"]),
                    sender_key=IdentityKey(session["sender_key"]),
                    room_id=RoomID(room_id),
                    forwarding_chain=session.get("forwarding_curve25519_key_chain") or [],
                )
                await machine.crypto_store.put_group_session(
                    RoomID(room_id), inbound.sender_key, SessionID(session_id), inbound
                )
                imported += 1

        token = await party.client.sync_store.get_next_batch()
        history = await party.client.get_messages(
            self.room_id, PaginationDirection.BACKWARD, from_token=token, limit=100
        )
        bodies: set[str] = set()
        errors: list[str] = []
        for event in history.events:  # type: ignore[attr-defined]
            if isinstance(event, EncryptedEvent):
                try:
                    decrypted = await machine.decrypt_megolm_event(event)
                except Exception as e:  # listed below
                    errors.append(f"{event.event_id}: {type(e).__name__}: {e}")
                    continue
                body = getattr(decrypted.content, "body", None)
                if isinstance(body, str):
                    bodies.add(body)
        if not set(self.sent) <= bodies:
            raise StepFailed(
                f"history not decrypted: missing {sorted(set(self.sent) - bodies)}; {errors}"
            )
        return (
            f"mautrix has no key-backup API: recovery key checked and backup key read from "
            f"secret storage by mautrix; {imported} sessions downloaded with HTTPAPI.request, "
            "decrypted by the project's keybackup/client_crypto.py, imported into mautrix's "
            "crypto store"
        )


async def run(base_url: str, steps: Steps) -> None:
    scenario = MautrixScenario(base_url, steps)
    try:
        await steps.run("register", scenario.register)
        await steps.run("cross_signing", scenario.cross_signing, needs=["register"])
        await steps.run("secret_storage", scenario.secret_storage, needs=["register"])
        await steps.run("encrypted_room", scenario.encrypted_room, needs=["register"])
        await steps.run(
            "members_before_encrypting", scenario.members_before_encrypting, ["encrypted_room"]
        )
        await steps.run("send_both_ways", scenario.send_both_ways, needs=["encrypted_room"])
        await steps.run(
            "key_backup", scenario.key_backup, needs=["secret_storage", "send_both_ways"]
        )
        await steps.run("restore_new_device", scenario.restore_new_device, needs=["key_backup"])
    finally:
        await scenario.close()
