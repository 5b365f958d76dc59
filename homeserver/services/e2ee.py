"""End-to-end encryption key distribution: the server relays public keys and encrypted
messages between devices, and can read none of them."""

from __future__ import annotations

import json
from contextlib import ExitStack
from typing import TYPE_CHECKING, Any

from crypto.canonical import verify
from homeserver.errors import Codes, MatrixError, bad_json, invalid_param
from homeserver.services.auth import Requester
from homeserver.storage.e2ee import OneTimeKeyConflict
from homeserver.streams import StreamIdGenerator

if TYPE_CHECKING:
    from homeserver.server import HomeServer

JsonDict = dict[str, Any]
CROSS_SIGNING_TYPES = {"master_key": "master", "self_signing_key": "self_signing",
                       "user_signing_key": "user_signing"}  # fmt: skip
TO_DEVICE_BATCH = 100


def _split_key_id(key_id: str) -> tuple[str, str]:
    algorithm, sep, identifier = key_id.partition(":")
    if not sep or not algorithm or not identifier:
        raise invalid_param(f"Key ID {key_id!r} must look like 'algorithm:id'")
    return algorithm, identifier


def _ed25519_key(key: JsonDict) -> tuple[str, str] | None:
    """(key ID, public key) of the ed25519 key in a cross-signing or device key object."""
    keys = key.get("keys")
    if not isinstance(keys, dict):
        return None
    for key_id, public in keys.items():
        if isinstance(key_id, str) and key_id.startswith("ed25519:") and isinstance(public, str):
            return key_id, public
    return None


class E2eeService:
    def __init__(self, hs: HomeServer, positions: tuple[int, int, int]) -> None:
        self.hs = hs
        self.store = hs.stores.e2ee
        self.device_lists = StreamIdGenerator(positions[0])
        self.to_device = StreamIdGenerator(positions[1])
        self._otk_seq = positions[2]

    # Device lists

    async def device_list_changed(
        self, user_id: str, devices: list[str] | None = None, deleted: bool = False
    ) -> None:
        """Record that the user's devices or keys changed and wake whoever shares a room;
        for our own users, tell the other servers in those rooms too (which devices, or,
        with ``devices`` None, the cross-signing keys)."""
        with self.device_lists.next_id() as stream_id:
            await self.store.add_device_list_change(stream_id, user_id)
        watchers = {user_id}
        for room_id in await self.hs.stores.events.get_rooms_for_user(user_id, ["join"]):
            watchers |= await self.hs.room_events.joined_users(room_id)
        self.hs.notifier.notify_users(watchers)
        if not self.hs.accounts.is_local(user_id) or not self.hs.config.federation.enabled:
            return
        federation = self.hs.federation_e2ee
        if devices is None:
            await federation.cross_signing_changed(user_id)
        for device_id in devices or []:
            await federation.device_changed(user_id, device_id, stream_id, deleted)

    async def remote_user_changed(self, user_id: str) -> None:
        """Another server announced a change of one of its users' devices or keys."""
        await self.device_list_changed(user_id)

    async def on_devices_deleted(self, user_id: str, device_ids: list[str]) -> None:
        await self.store.delete_device_data(user_id, device_ids)
        await self.device_list_changed(user_id, device_ids, deleted=True)

    # Upload

    async def upload_keys(self, requester: Requester, body: JsonDict) -> JsonDict:
        user_id, device_id = requester.user_id, requester.device_id
        device_keys = body.get("device_keys")
        if device_keys is not None:
            await self._upload_device_keys(user_id, device_id, device_keys)
        one_time = body.get("one_time_keys")
        if one_time is not None:
            if not isinstance(one_time, dict):
                raise bad_json("one_time_keys must be an object")
            keys = []
            for key_id, key in one_time.items():
                algorithm, identifier = _split_key_id(key_id)
                keys.append((algorithm, identifier, json.dumps(key)))
            first = self._otk_seq + 1
            self._otk_seq += len(keys)
            try:
                await self.store.add_one_time_keys(user_id, device_id, keys, first)
            except OneTimeKeyConflict as e:
                raise MatrixError(
                    400, Codes.INVALID_PARAM,
                    f"One-time key {e.key_id} already exists with a different value",
                ) from None  # fmt: skip
        fallback = body.get("fallback_keys", body.get("org.matrix.msc2732.fallback_keys"))
        if fallback is not None:
            if not isinstance(fallback, dict):
                raise bad_json("fallback_keys must be an object")
            for key_id, key in fallback.items():
                algorithm, identifier = _split_key_id(key_id)
                await self.store.set_fallback_key(
                    user_id, device_id, algorithm, identifier, json.dumps(key)
                )
        return {"one_time_key_counts": await self.store.count_one_time_keys(user_id, device_id)}

    async def _upload_device_keys(self, user_id: str, device_id: str, keys: Any) -> None:
        if not isinstance(keys, dict):
            raise bad_json("device_keys must be an object")
        if keys.get("user_id") != user_id or keys.get("device_id") != device_id:
            raise invalid_param("device_keys must name this user and device")
        if not isinstance(keys.get("algorithms"), list) or not isinstance(keys.get("keys"), dict):
            raise bad_json("device_keys needs algorithms and keys")
        signing = keys["keys"].get(f"ed25519:{device_id}")
        if not isinstance(signing, str) or not verify(
            keys, user_id, f"ed25519:{device_id}", signing
        ):
            raise invalid_param("device_keys must be signed by the device's own ed25519 key")
        existing = await self.store.get_device_keys(user_id, device_id)
        if existing == keys:
            return
        await self.store.set_device_keys(user_id, device_id, keys)
        await self.device_list_changed(user_id, [device_id])

    # Query and claim

    async def query_keys(self, requester: Requester, body: JsonDict) -> JsonDict:
        wanted = body.get("device_keys")
        if not isinstance(wanted, dict):
            raise bad_json("device_keys must be an object of user IDs to device lists")
        for devices in wanted.values():
            if not isinstance(devices, list) or not all(isinstance(d, str) for d in devices):
                raise bad_json("device_keys values must be lists of device IDs")
        local = [u for u in wanted if isinstance(u, str) and self.hs.accounts.is_local(u)]
        remote = {u: d for u, d in wanted.items() if u not in local}
        result = await self.local_keys({u: wanted[u] for u in local}, requester.user_id)
        result["failures"] = {}
        if remote:
            if not self.hs.config.federation.enabled:
                result["failures"] = {
                    u.split(":", 1)[-1]: {"status": 503, "message": "Federation is disabled"}
                    for u in remote
                }
                return result
            answers, result["failures"] = await self.hs.federation_e2ee.query_remote_keys(
                remote, _timeout(body)
            )
            # Signatures our user made on remote users' keys are kept here, not there.
            signatures = await self.store.get_signatures(list(remote))
            for user_id, key in answers["master_keys"].items():
                found = _ed25519_key(key)
                if found is not None:
                    key = self._with_signatures(key, user_id, found[0], signatures,
                                                requester.user_id)  # fmt: skip
                result["master_keys"][user_id] = key
            for field in ("device_keys", "self_signing_keys"):
                result[field].update(answers[field])
        return result

    async def local_keys(self, wanted: dict[str, list[str]], requester_id: str) -> JsonDict:
        """Our users' device and cross-signing keys, as ``/keys/query`` answers (for a
        remote requester, ``requester_id`` is empty: no user-signing keys)."""
        local = list(wanted)
        signatures = await self.store.get_signatures(local)
        result: JsonDict = {"device_keys": {}, "master_keys": {}, "self_signing_keys": {},
                            "user_signing_keys": {}}  # fmt: skip
        for user_id, device_id, keys, display_name in await self.store.query_device_keys(local):
            devices = wanted.get(user_id) or []
            if devices and device_id not in devices:
                continue
            keys = self._with_signatures(keys, user_id, f"ed25519:{device_id}", signatures,
                                         requester_id)  # fmt: skip
            keys["unsigned"] = {"device_display_name": display_name} if display_name else {}
            result["device_keys"].setdefault(user_id, {})[device_id] = keys
        for user_id in local:
            result["device_keys"].setdefault(user_id, {})
        for user_id, by_type in (await self.store.get_cross_signing_keys(local)).items():
            for field, key_type in CROSS_SIGNING_TYPES.items():
                key = by_type.get(key_type)
                if key is None:
                    continue
                if key_type == "user_signing" and user_id != requester_id:
                    continue  # user-signing keys only to their owner
                found = _ed25519_key(key)
                if found is not None:
                    key = self._with_signatures(key, user_id, found[0], signatures, requester_id)
                result[field.replace("_key", "_keys")][user_id] = key
        return result

    @staticmethod
    def _with_signatures(
        key: JsonDict,
        owner: str,
        key_id: str,
        signatures: list[tuple[str, str, str, str, str]],
        requester_id: str,
    ) -> JsonDict:
        """Merge uploaded signatures in; another user's signatures only to that user."""
        merged = json.loads(json.dumps(key))
        public_id = key_id.split(":", 1)[1]
        for target, target_key, signer, signer_key, signature in signatures:
            if target != owner or target_key not in (key_id, public_id):
                continue
            if signer != owner and signer != requester_id:
                continue
            merged.setdefault("signatures", {}).setdefault(signer, {})[signer_key] = signature
        return merged

    async def claim_keys(self, body: JsonDict, local_only: bool = False) -> JsonDict:
        wanted = body.get("one_time_keys")
        if not isinstance(wanted, dict):
            raise bad_json("one_time_keys must be an object")
        requests = []
        remote: dict[str, dict[str, str]] = {}
        for user_id, devices in wanted.items():
            if not isinstance(devices, dict):
                raise bad_json("one_time_keys values must be objects")
            if not all(isinstance(a, str) for a in devices.values()):
                raise bad_json("algorithms must be strings")
            if not self.hs.accounts.is_local(user_id):
                if not local_only:
                    remote[user_id] = devices
                continue
            for device_id, algorithm in devices.items():
                requests.append((user_id, device_id, algorithm))
        claimed = await self.store.claim_keys(requests)
        result: JsonDict = {}
        for (user_id, device_id), (key_id, key) in claimed.items():
            result.setdefault(user_id, {})[device_id] = {key_id: key}
        failures: JsonDict = {}
        if remote and not self.hs.config.federation.enabled:
            failures = {u.split(":", 1)[-1]: {"status": 503} for u in remote}
        elif remote:
            remote_claimed, failures = await self.hs.federation_e2ee.claim_remote_keys(
                remote, _timeout(body)
            )
            result.update(remote_claimed)
        return {"one_time_keys": result, "failures": failures}

    # Cross-signing

    async def upload_cross_signing(self, requester: Requester, body: JsonDict) -> None:
        user_id = requester.user_id
        existing = (await self.store.get_cross_signing_keys([user_id])).get(user_id, {})
        new: dict[str, JsonDict] = {}
        for field, key_type in CROSS_SIGNING_TYPES.items():
            key = body.get(field)
            if key is None:
                continue
            if not isinstance(key, dict) or key.get("user_id") != user_id:
                raise invalid_param(f"{field} must be an object for this user")
            if key_type not in (key.get("usage") or []) or _ed25519_key(key) is None:
                raise invalid_param(f"{field} needs usage '{key_type}' and an ed25519 key")
            new[key_type] = key
        master = new.get("master") or existing.get("master")
        for key_type in ("self_signing", "user_signing"):
            if key_type in new:
                if master is None:
                    raise invalid_param("upload a master key first")
                master_id, master_public = _ed25519_key(master) or ("", "")
                if not verify(new[key_type], user_id, master_id, master_public):
                    raise invalid_param(f"{key_type} key must be signed by the master key")
        if not new:
            return
        # No re-authentication for the first upload, an identical re-upload, or while an
        # admin allows this user to replace keys without it.
        until = await self.hs.admin.store.cross_signing_replacement_until(user_id)
        exempt = until is not None and until > self.hs.clock.time_msec()
        if existing and not exempt and any(existing.get(t) != k for t, k in new.items()):
            await self.hs.uia.authenticate(
                body, [["m.login.password"]], "cross_signing_upload", requester
            )
        await self.store.set_cross_signing_keys(user_id, new)
        await self.device_list_changed(user_id)

    async def upload_signatures(self, requester: Requester, body: JsonDict) -> JsonDict:
        signer = requester.user_id
        own = (await self.store.get_cross_signing_keys([signer])).get(signer, {})
        failures: dict[str, dict[str, JsonDict]] = {}
        rows = []
        changed_users = set()
        for target_user, keys in body.items():
            if not isinstance(keys, dict):
                raise bad_json("each user's value must be an object of key IDs")
            for key_id, signed in keys.items():
                try:
                    rows += await self._verify_signed(signer, own, target_user, key_id, signed)
                    changed_users.add(target_user)
                except ValueError as e:
                    failures.setdefault(target_user, {})[key_id] = {
                        "errcode": Codes.INVALID_PARAM if "not found" not in str(e)
                        else Codes.NOT_FOUND,
                        "error": str(e),
                    }  # fmt: skip
        await self.store.add_signatures(rows)
        for user_id in changed_users:
            signed_devices = sorted(
                {key_id.split(":", 1)[1] for target, key_id, *_ in rows if target == user_id}
                & set(await self.hs.stores.devices.get_device_ids(user_id))
            )
            await self.device_list_changed(user_id, signed_devices or None)
        return {"failures": failures}

    async def _verify_signed(
        self, signer: str, own: dict[str, JsonDict], target: str, key_id: str, signed: Any
    ) -> list[tuple[str, str, str, str, str]]:
        if not isinstance(signed, dict):
            raise ValueError("the signed object must be an object")
        by_signer = signed.get("signatures")
        signatures = by_signer.get(signer) if isinstance(by_signer, dict) else None
        if not isinstance(signatures, dict) or not signatures:
            raise ValueError("no signature by the uploader")
        # Which stored key is being signed, and which of the signer's keys may sign it.
        if self.hs.accounts.is_local(target):
            target_keys = (await self.store.get_cross_signing_keys([target])).get(target, {})
        else:  # another server's user: their server holds the key
            remote_master = await self.hs.federation_e2ee.remote_master_key(target)
            target_keys = {"master": remote_master} if remote_master else {}
        device = await self.store.get_device_keys(target, key_id)
        if device is not None and target == signer:
            signing_keys = [own.get("self_signing")]
            stored: JsonDict = device
            target_key_id = f"ed25519:{key_id}"
        elif (
            target_keys.get("master")
            and _ed25519_key(target_keys["master"])
            and ((_ed25519_key(target_keys["master"]) or ("", ""))[1] == key_id)
        ):
            stored = target_keys["master"]
            target_key_id = f"ed25519:{key_id}"
            if target == signer:
                devices = await self.store.query_device_keys([signer])
                signing_keys = [d[2] for d in devices]
            else:
                signing_keys = [own.get("user_signing")]
        else:
            raise ValueError("key not found")
        unsigned_view = {k: v for k, v in signed.items() if k not in ("signatures", "unsigned")}
        stored_view = {k: v for k, v in stored.items() if k not in ("signatures", "unsigned")}
        if unsigned_view != stored_view:
            raise ValueError("the signed object does not match the stored key")
        # Only signatures by the keys allowed to sign this key count; others (such as a
        # device's own self-signature carried along) are ignored.
        allowed = {
            key_id: public
            for candidate in signing_keys
            if candidate
            for key_id, public in (candidate.get("keys") or {}).items()
        }
        rows = []
        for signer_key_id, signature in signatures.items():
            public = allowed.get(signer_key_id)
            if public is None:
                continue
            signed_copy = {**stored_view, "signatures": {signer: {signer_key_id: signature}}}
            if not verify(signed_copy, signer, signer_key_id, public):
                raise ValueError(f"signature {signer_key_id} does not verify")
            rows.append((target, target_key_id, signer, signer_key_id, signature))
        if not rows:
            raise ValueError("no signature by a key allowed to sign this key")
        return rows

    # To-device

    async def send_to_device(
        self, requester: Requester, event_type: str, txn_id: str, messages: Any
    ) -> None:
        if not isinstance(messages, dict):
            raise bad_json("messages must be an object")
        if not await self.store.record_to_device_txn(
            requester.user_id, requester.device_id, txn_id, self.hs.clock.time_msec()
        ):
            return  # a retry of a transaction already delivered
        local: dict[str, JsonDict] = {}
        remote: dict[str, JsonDict] = {}
        for user_id, by_device in messages.items():
            if not isinstance(by_device, dict):
                raise bad_json("messages values must be objects of device IDs")
            (local if self.hs.accounts.is_local(user_id) else remote)[user_id] = by_device
        if remote and self.hs.config.federation.enabled:
            await self.hs.federation_e2ee.send_to_device(
                requester.user_id, event_type,
                f"{requester.user_id}|{requester.device_id}|{txn_id}", remote,
            )  # fmt: skip
        await self._store_to_device(requester.user_id, event_type, local)

    async def deliver_to_device(
        self, sender: str, scope: str, message_id: str, event_type: str,
        messages: dict[str, JsonDict],
    ) -> None:  # fmt: skip
        """Messages another server carried to our users; each message ID delivered once."""
        if not await self.store.record_to_device_txn(
            sender, scope, message_id, self.hs.clock.time_msec()
        ):
            return
        await self._store_to_device(sender, event_type, messages, existing_only=True)

    async def _store_to_device(
        self, sender: str, event_type: str, messages: dict[str, JsonDict],
        existing_only: bool = False,
    ) -> None:  # fmt: skip
        rows = []
        recipients = set()
        for user_id, by_device in messages.items():
            device_ids = list(by_device)
            if "*" in by_device:
                device_ids = await self.hs.stores.devices.get_device_ids(user_id)
            elif existing_only:  # another server names devices: only real ones get rows
                known = set(await self.hs.stores.devices.get_device_ids(user_id))
                device_ids = [d for d in device_ids if d in known]
            for device_id in device_ids:
                content = by_device.get(device_id, by_device.get("*"))
                message = {"type": event_type, "sender": sender, "content": content}
                rows.append((user_id, device_id, json.dumps(message)))
            recipients.add(user_id)
        # Positions stay "in flight" until written, so no sync acknowledges past them early.
        with ExitStack() as in_flight:
            stored = [
                (in_flight.enter_context(self.to_device.next_id()), user_id, device_id, message)
                for user_id, device_id, message in rows
            ]
            if stored:
                await self.store.add_to_device(stored)
        self.hs.notifier.notify_users(recipients)


def _timeout(body: JsonDict) -> int:
    """The client's ``timeout`` for asking other servers, bounded."""
    value = body.get("timeout", 10_000)
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        return 10_000
    return min(value, 30_000)
