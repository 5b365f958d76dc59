"""The scenario with matrix-nio (and its olm support).

nio has no cross-signing, secret storage or key backup API. Cross-signing and the backup
upload go through nio's own HTTP plumbing (``AsyncClient.send``) with python-olm primitives;
the restore uses the project's user-side code (keybackup/restore.py) and nio's key import.
Every result that went around the library says so.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import tempfile
import time
from typing import Any
from urllib.parse import quote, urlencode

import nio
import olm

from keybackup.client_crypto import backup_public_key, encode_recovery_key, export_sessions
from keybackup.restore import HomeserverClient, restore
from scripts.client_matrix._common import (
    BACKUP_ALGORITHM,
    CLIENT_PREFIX,
    MEGOLM,
    HttpFailure,
    JsonDict,
    NotAvailable,
    StepFailed,
    Steps,
    backup_session_data,
    canonical_json,
    localpart,
    member_check,
    password_auth,
    uia_session,
    unsigned_copy,
)

DEVICE_NAME = "client-matrix nio"


def q(value: str) -> str:
    return quote(value, safe="")


async def raw(
    client: nio.AsyncClient,
    method: str,
    path: str,
    body: Any = None,
    query: dict[str, str] | None = None,
) -> tuple[int, Any]:
    """A request through nio's HTTP plumbing; returns status and parsed JSON (or text)."""
    url = CLIENT_PREFIX + path + ("?" + urlencode(query) if query else "")
    headers = {"Authorization": f"Bearer {client.access_token}"}
    data = None
    if body is not None:
        data = json.dumps(body)
        headers["Content-Type"] = "application/json"
    response = await client.send(method, url, data, headers=headers, timeout=30)
    try:
        text = await response.text()
    finally:
        response.release()
    try:
        return response.status, json.loads(text)
    except ValueError:
        return response.status, text


async def checked(
    client: nio.AsyncClient,
    method: str,
    path: str,
    body: Any = None,
    query: dict[str, str] | None = None,
) -> Any:
    status, data = await raw(client, method, path, body, query)
    if status != 200:
        shown = path + ("?" + urlencode(query) if query else "")
        raise HttpFailure(method, CLIENT_PREFIX + shown, status, data)
    return data


def expect(response: Any, wanted: type, what: str) -> Any:
    if not isinstance(response, wanted):
        raise StepFailed(f"{what}: {response}")
    return response


class NioScenario:
    def __init__(self, base_url: str, steps: Steps) -> None:
        self.base_url = base_url.rstrip("/")
        self.steps = steps
        self.password = "pw-" + secrets.token_hex(8)
        self.tmp = tempfile.TemporaryDirectory(prefix="client-matrix-nio-")
        self.clients: list[nio.AsyncClient] = []
        self.alice: nio.AsyncClient | None = None
        self.bob: nio.AsyncClient | None = None
        self.room_id = ""
        self.sent: dict[str, str] = {}  # body -> sender
        self.recovery_key = ""
        self.backup_version = ""

    # Plumbing

    def client(self, user_id: str) -> nio.AsyncClient:
        store = tempfile.mkdtemp(dir=self.tmp.name)
        config = nio.AsyncClientConfig(encryption_enabled=True, store_sync_tokens=True)
        client = nio.AsyncClient(self.base_url, user_id, store_path=store, config=config)
        self.clients.append(client)
        return client

    @property
    def a(self) -> nio.AsyncClient:
        assert self.alice is not None
        return self.alice

    @property
    def b(self) -> nio.AsyncClient:
        assert self.bob is not None
        return self.bob

    async def close(self) -> None:
        for client in self.clients:
            await client.close()
        self.tmp.cleanup()

    async def sync(self, client: nio.AsyncClient, timeout_ms: int = 0) -> nio.SyncResponse:
        """One sync and what an E2EE client does after it (keys up, devices, sessions)."""
        response = expect(await client.sync(timeout=timeout_ms), nio.SyncResponse, "sync")
        if client.should_upload_keys:
            expect(await client.keys_upload(), nio.KeysUploadResponse, "keys_upload")
        if client.should_query_keys:
            expect(await client.keys_query(), nio.KeysQueryResponse, "keys_query")
        if client.should_claim_keys:
            users = client.get_users_for_key_claiming()
            expect(await client.keys_claim(users), nio.KeysClaimResponse, "keys_claim")
        await client.send_to_device_messages()
        assert isinstance(response, nio.SyncResponse)
        return response

    async def receive(self, client: nio.AsyncClient, wanted: set[str]) -> None:
        """Sync until every wanted body arrived decrypted."""
        seen: set[str] = set()
        undecrypted: set[str] = set()
        end = time.monotonic() + 30
        while not wanted <= seen and time.monotonic() < end:
            response = await self.sync(client, timeout_ms=1000)
            room = response.rooms.join.get(self.room_id)
            if room is None:
                continue
            for event in room.timeline.events:
                if isinstance(event, nio.RoomMessageText):
                    if not event.decrypted:
                        raise StepFailed(f"message {event.body!r} arrived unencrypted")
                    seen.add(event.body)
                elif isinstance(event, nio.MegolmEvent):
                    undecrypted.add(event.session_id)
        if not wanted <= seen:
            raise StepFailed(
                f"{client.user_id} did not decrypt {sorted(wanted - seen)}; "
                f"undecryptable sessions {sorted(undecrypted)}"
            )

    # Steps

    async def register(self) -> str | None:
        for name in ("alice", "bob"):
            registrar = nio.AsyncClient(self.base_url, "")
            try:
                registered = expect(
                    await registrar.register(localpart(name), self.password, DEVICE_NAME),
                    nio.RegisterResponse,
                    f"register {name}",
                )
            finally:
                await registrar.close()
            client = self.client(registered.user_id)
            expect(
                await client.login(self.password, device_name=DEVICE_NAME),
                nio.LoginResponse,
                f"login {name}",
            )
            await self.sync(client)
            if name == "alice":
                self.alice = client
            else:
                self.bob = client
        return None

    async def cross_signing(self) -> str | None:
        client = self.a
        user_id = client.user_id
        assert client.olm is not None

        def key(usage: str, signer: olm.PkSigning) -> JsonDict:
            return {
                "user_id": user_id,
                "usage": [usage],
                "keys": {f"ed25519:{signer.public_key}": signer.public_key},
            }

        def signed(obj: JsonDict, key_id: str, signature: str) -> JsonDict:
            obj["signatures"] = {user_id: {key_id: signature}}
            return obj

        def make_keys() -> tuple[JsonDict, olm.PkSigning]:
            master, ssk, usk = (olm.PkSigning(olm.PkSigning.generate_seed()) for _ in range(3))
            master_key = key("master", master)
            device_signature = client.olm.account.sign(canonical_json(master_key))
            signed(master_key, f"ed25519:{client.device_id}", device_signature)
            keys = {"master_key": master_key}
            for field, usage, signer in (
                ("self_signing_key", "self_signing", ssk),
                ("user_signing_key", "user_signing", usk),
            ):
                obj = key(usage, signer)
                keys[field] = signed(
                    obj, f"ed25519:{master.public_key}", master.sign(canonical_json(obj))
                )
            return keys, ssk

        path = "/keys/device_signing/upload"
        # The first upload needs no UIA (spec v1.11); replacing the keys needs the password.
        first, _ = make_keys()
        status, data = await raw(client, "POST", path, first)
        if status == 401:
            first["auth"] = password_auth(
                user_id, self.password, uia_session(status, data, "m.login.password")
            )
            await checked(client, "POST", path, first)
        elif status != 200:
            raise HttpFailure("POST", CLIENT_PREFIX + path, status, data, "first upload")
        keys, ssk = make_keys()
        status, data = await raw(client, "POST", path, keys)
        if status == 200:
            raise StepFailed(
                "server replaced the existing master key without UIA: POST "
                f"{CLIENT_PREFIX}{path} (new keys) -> 200"
            )
        session = uia_session(status, data, "m.login.password")
        keys["auth"] = password_auth(user_id, self.password, session)
        await checked(client, "POST", path, keys)

        # Sign our own device with the self-signing key.
        query = {"device_keys": {user_id: [client.device_id]}}
        device = (await checked(client, "POST", "/keys/query", query))["device_keys"][user_id][
            client.device_id
        ]
        to_sign = unsigned_copy(device)
        ssk_id = f"ed25519:{ssk.public_key}"
        to_sign["signatures"] = {user_id: {ssk_id: ssk.sign(canonical_json(to_sign))}}
        result = await checked(
            client, "POST", "/keys/signatures/upload", {user_id: {client.device_id: to_sign}}
        )
        if result.get("failures"):
            raise StepFailed(f"signature upload failures: {json.dumps(result['failures'])}")

        answer = await checked(client, "POST", "/keys/query", query)
        master_id = next(iter(keys["master_key"]["keys"]))
        if master_id not in ((answer.get("master_keys") or {}).get(user_id) or {}).get("keys", {}):
            raise StepFailed(f"/keys/query does not show the new master key: {answer}")
        if ssk_id not in (answer.get("self_signing_keys") or {}).get(user_id, {}).get("keys", {}):
            raise StepFailed(f"/keys/query does not show the self-signing key: {answer}")
        device_sigs = answer["device_keys"][user_id][client.device_id].get("signatures", {})
        if ssk_id not in device_sigs.get(user_id, {}):
            raise StepFailed(f"the device's self-signing signature is missing: {device_sigs}")
        return (
            "nio has no cross-signing API: keys made with python-olm PkSigning and sent with "
            "nio's AsyncClient.send (first upload without UIA, replacement with password UIA)"
        )

    async def secret_storage(self) -> str | None:
        raise NotAvailable("matrix-nio has no secret storage (SSSS) support")

    async def encrypted_room(self) -> str | None:
        created = expect(
            await self.a.room_create(
                invite=[self.b.user_id],
                initial_state=[
                    {"type": "m.room.encryption", "state_key": "", "content": {"algorithm": MEGOLM}}
                ],
            ),
            nio.RoomCreateResponse,
            "room_create",
        )
        self.room_id = created.room_id
        end = time.monotonic() + 30
        while self.room_id not in self.b.invited_rooms and time.monotonic() < end:
            await self.sync(self.b, timeout_ms=1000)
        if self.room_id not in self.b.invited_rooms:
            raise StepFailed("bob never saw the invite in /sync")
        expect(await self.b.join(self.room_id), nio.JoinResponse, "bob join")
        while time.monotonic() < end:
            await self.sync(self.a, timeout_ms=500)
            await self.sync(self.b, timeout_ms=500)
            a_room, b_room = self.a.rooms.get(self.room_id), self.b.rooms.get(self.room_id)
            if (
                a_room is not None
                and b_room is not None
                and a_room.encrypted
                and b_room.encrypted
                and self.b.user_id in a_room.users
                and self.b.user_id not in a_room.invited_users
            ):
                return None
        raise StepFailed("the room never showed as encrypted with both members to both")

    async def members_before_encrypting(self) -> str | None:
        token = self.a.next_batch
        query = {"not_membership": "leave", "at": token}
        data = await checked(self.a, "GET", f"/rooms/{q(self.room_id)}/members", query=query)
        member_check(data, [self.a.user_id, self.b.user_id])
        return "nio has no /members call; sent with nio's AsyncClient.send"

    async def send_both_ways(self) -> str | None:
        for sender, receiver in ((self.a, self.b), (self.b, self.a)):
            await self.sync(sender)
            body = f"from {sender.user_id} {secrets.token_hex(6)}"
            expect(
                await sender.room_send(
                    self.room_id,
                    "m.room.message",
                    {"msgtype": "m.text", "body": body},
                    ignore_unverified_devices=True,
                ),
                nio.RoomSendResponse,
                "room_send",
            )
            self.sent[body] = sender.user_id
            await self.receive(receiver, {body})
        return None

    async def key_backup(self) -> str | None:
        client = self.a
        assert client.olm is not None
        backup_key = os.urandom(32)
        public_key = backup_public_key(backup_key)
        auth_data: JsonDict = {"public_key": public_key}
        auth_data["signatures"] = {
            client.user_id: {
                f"ed25519:{client.device_id}": client.olm.account.sign(canonical_json(auth_data))
            }
        }
        version = await checked(
            client,
            "POST",
            "/room_keys/version",
            {"algorithm": BACKUP_ALGORITHM, "auth_data": auth_data},
        )
        self.backup_version = str(version["version"])
        sessions = [s for s in client.olm.inbound_group_store if s.room_id == self.room_id]
        if len({s.sender_key for s in sessions}) < 2:
            raise StepFailed(f"expected alice's and bob's Megolm sessions, nio holds {sessions}")
        upload = {
            self.room_id: {
                "sessions": {
                    s.id: {
                        "first_message_index": s.first_known_index,
                        "forwarded_count": len(s.forwarding_chain),
                        "is_verified": False,
                        "session_data": backup_session_data(
                            public_key,
                            {
                                "algorithm": MEGOLM,
                                "sender_key": s.sender_key,
                                "session_key": s.export_session(s.first_known_index),
                                "sender_claimed_keys": {"ed25519": s.ed25519},
                                "forwarding_curve25519_key_chain": list(s.forwarding_chain),
                            },
                        ),
                    }
                    for s in sessions
                }
            }
        }
        query = {"version": self.backup_version}
        answer = await checked(client, "PUT", "/room_keys/keys", {"rooms": upload}, query)
        if answer.get("count") != len(sessions):
            raise StepFailed(f"PUT /room_keys/keys counted {answer}, uploaded {len(sessions)}")
        stored = await checked(client, "GET", f"/room_keys/keys/{q(self.room_id)}", query=query)
        if set(stored.get("sessions", {})) != {s.id for s in sessions}:
            raise StepFailed(f"the backup holds {stored}, not the uploaded sessions")
        # Without secret storage, the recovery key is the backup key itself, as Element's
        # "security key" for a backup made before SSSS.
        self.recovery_key = encode_recovery_key(backup_key)
        return (
            "nio has no key-backup API: version made and sessions uploaded with nio's "
            "AsyncClient.send + python-olm PkEncryption"
        )

    async def restore_new_device(self) -> str | None:
        client = self.client(self.a.user_id)
        expect(
            await client.login(self.password, device_name=DEVICE_NAME + " restore"),
            nio.LoginResponse,
            "login on a new device",
        )
        await self.sync(client)
        http = HomeserverClient(self.base_url, client.access_token)
        result = await asyncio.to_thread(restore, http, client.user_id, self.recovery_key)
        if result.failed:
            raise StepFailed(f"sessions the recovery key could not open: {result.failed}")
        passphrase = secrets.token_hex(8)
        export = os.path.join(self.tmp.name, "keys.txt")
        with open(export, "w", encoding="utf-8") as f:
            f.write(export_sessions(result.sessions, passphrase, rounds=10_000))
        await client.import_keys(export, passphrase)

        messages = expect(
            await client.room_messages(self.room_id, start=client.next_batch, limit=100),
            nio.RoomMessagesResponse,
            "room_messages",
        )
        seen = {e.body for e in messages.chunk if isinstance(e, nio.RoomMessageText)}
        undecrypted = [e.session_id for e in messages.chunk if isinstance(e, nio.MegolmEvent)]
        if not set(self.sent) <= seen:
            raise StepFailed(
                f"history not decrypted: missing {sorted(set(self.sent) - seen)}, "
                f"undecryptable sessions {undecrypted}"
            )
        return (
            f"nio has no key-backup API: {len(result.sessions)} sessions downloaded and "
            "decrypted by the project's keybackup/restore.py, imported with nio's import_keys"
        )


async def run(base_url: str, steps: Steps) -> None:
    scenario = NioScenario(base_url, steps)
    try:
        await steps.run("register", scenario.register)
        await steps.run("cross_signing", scenario.cross_signing, needs=["register"])
        await steps.run("secret_storage", scenario.secret_storage, needs=["register"])
        await steps.run("encrypted_room", scenario.encrypted_room, needs=["register"])
        await steps.run(
            "members_before_encrypting", scenario.members_before_encrypting, ["encrypted_room"]
        )
        await steps.run("send_both_ways", scenario.send_both_ways, needs=["encrypted_room"])
        await steps.run("key_backup", scenario.key_backup, needs=["send_both_ways"])
        await steps.run("restore_new_device", scenario.restore_new_device, needs=["key_backup"])
    finally:
        await scenario.close()
