"""SQL for end-to-end encryption: device keys, one-time and fallback keys, cross-signing
keys and signatures, device-list changes, and to-device messages."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

from homeserver.storage.batching import BatchedWrites
from homeserver.storage.engine import Database, Txn

JsonDict = dict[str, Any]


class OneTimeKeyConflict(Exception):
    def __init__(self, key_id: str) -> None:
        super().__init__(key_id)
        self.key_id = key_id


# (user, device, algorithm) of one key wanted; what was claimed, by (user, device).
ClaimRequest = tuple[str, str, str]
ClaimedKeys = dict[tuple[str, str], tuple[str, JsonDict]]


class E2eeStore:
    def __init__(self, db: Database) -> None:
        self.db = db
        self._claims: BatchedWrites[list[ClaimRequest], ClaimedKeys] = BatchedWrites(
            db, "claim_keys", _claim_batch_txn
        )

    async def get_max_positions(self) -> tuple[int, int, int]:
        """(device list stream, to-device stream, one-time key sequence)."""

        def txn_fn(txn: Txn) -> tuple[int, int, int]:
            values = []
            for sql in (
                "SELECT MAX(stream_id) FROM device_list_changes",
                "SELECT MAX(stream_id) FROM to_device_messages",
                "SELECT MAX(seq) FROM one_time_keys",
            ):
                row = txn.select_one(sql)
                values.append(int(row[0]) if row and row[0] is not None else 0)
            return values[0], values[1], values[2]

        return await self.db.run("e2ee_max_positions", txn_fn)

    # Device keys

    async def get_device_keys(self, user_id: str, device_id: str) -> JsonDict | None:
        row = await self.db.run(
            "get_device_key",
            lambda txn: txn.select_one(
                "SELECT key_json FROM device_keys WHERE user_id = ? AND device_id = ?",
                (user_id, device_id),
            ),
        )
        return json.loads(row[0]) if row else None

    async def set_device_keys(self, user_id: str, device_id: str, keys: JsonDict) -> None:
        encoded = json.dumps(keys)
        await self.db.run(
            "set_device_keys",
            lambda txn: txn.execute(
                "INSERT INTO device_keys (user_id, device_id, key_json) VALUES (?, ?, ?) "
                "ON CONFLICT (user_id, device_id) DO UPDATE SET key_json = excluded.key_json",
                (user_id, device_id, encoded),
            ),
        )

    async def query_device_keys(
        self, user_ids: Sequence[str]
    ) -> list[tuple[str, str, JsonDict, str | None]]:
        """(user, device, keys, display name) of every device with keys, of these users."""
        if not user_ids:
            return []
        marks = ",".join("?" * len(user_ids))
        rows = await self.db.run(
            "query_device_keys",
            lambda txn: txn.select(
                f"SELECT k.user_id, k.device_id, k.key_json, d.display_name FROM device_keys k "
                f"JOIN devices d ON d.user_id = k.user_id AND d.device_id = k.device_id "
                f"WHERE k.user_id IN ({marks})",
                list(user_ids),
            ),
        )
        return [(r[0], r[1], json.loads(r[2]), r[3]) for r in rows]

    # One-time and fallback keys

    async def add_one_time_keys(
        self, user_id: str, device_id: str, keys: Sequence[tuple[str, str, str]], first_seq: int
    ) -> None:
        """(algorithm, key ID, key JSON) each; identical re-uploads are no-ops."""

        await self.db.run(
            "add_one_time_keys", add_one_time_keys_txn, user_id, device_id, keys, first_seq
        )

    async def count_one_time_keys(self, user_id: str, device_id: str) -> dict[str, int]:
        return await self.db.run(
            "count_one_time_keys", _count_one_time_keys_txn, user_id, device_id
        )

    async def set_fallback_key(
        self, user_id: str, device_id: str, algorithm: str, key_id: str, key_json: str
    ) -> None:
        def txn_fn(txn: Txn) -> None:
            row = txn.select_one(
                "SELECT key_id, key_json FROM fallback_keys WHERE user_id = ? AND device_id = ? "
                "AND algorithm = ?",
                (user_id, device_id, algorithm),
            )
            if row is not None and row[0] == key_id and json.loads(row[1]) == json.loads(key_json):
                return  # the same key again: keep its used flag
            txn.execute(
                "INSERT INTO fallback_keys (user_id, device_id, algorithm, key_id, key_json, used) "
                "VALUES (?, ?, ?, ?, ?, 0) ON CONFLICT (user_id, device_id, algorithm) DO UPDATE "
                "SET key_id = excluded.key_id, key_json = excluded.key_json, used = 0",
                (user_id, device_id, algorithm, key_id, key_json),
            )

        await self.db.run("set_fallback_key", txn_fn)

    async def unused_fallback_key_types(self, user_id: str, device_id: str) -> list[str]:
        return await self.db.run(
            "unused_fallback_key_types", _unused_fallback_key_types_txn, user_id, device_id
        )

    async def claim_keys(self, requests: Sequence[ClaimRequest]) -> ClaimedKeys:
        """For each (user, device, algorithm), take the oldest one-time key, or else the
        fallback key. Each one-time key is handed out exactly once, even under concurrency;
        claims made at the same time share a transaction."""
        if not requests:
            return {}
        return await self._claims.submit(list(requests))

    # Cross-signing

    async def get_cross_signing_keys(
        self, user_ids: Sequence[str]
    ) -> dict[str, dict[str, JsonDict]]:
        if not user_ids:
            return {}
        marks = ",".join("?" * len(user_ids))
        rows = await self.db.run(
            "get_cross_signing_keys",
            lambda txn: txn.select(
                f"SELECT user_id, key_type, key_json FROM cross_signing_keys "
                f"WHERE user_id IN ({marks})",
                list(user_ids),
            ),
        )
        result: dict[str, dict[str, JsonDict]] = {}
        for user_id, key_type, key_json in rows:
            result.setdefault(user_id, {})[key_type] = json.loads(key_json)
        return result

    async def set_cross_signing_keys(self, user_id: str, keys: dict[str, JsonDict]) -> None:
        def txn_fn(txn: Txn) -> None:
            for key_type, key in keys.items():
                txn.execute(
                    "INSERT INTO cross_signing_keys (user_id, key_type, key_json) VALUES (?, ?, ?) "
                    "ON CONFLICT (user_id, key_type) DO UPDATE SET key_json = excluded.key_json",
                    (user_id, key_type, json.dumps(key)),
                )

        await self.db.run("set_cross_signing_keys", txn_fn)

    async def add_signatures(self, rows: Sequence[tuple[str, str, str, str, str]]) -> None:
        """(target user, target key ID, signer user, signer key ID, signature)."""
        if not rows:
            return
        await self.db.run(
            "add_signatures",
            lambda txn: txn.execute_many(
                "INSERT INTO e2e_signatures (target_user_id, target_key_id, signer_user_id, "
                "signer_key_id, signature) VALUES (?, ?, ?, ?, ?) ON CONFLICT (target_user_id, "
                "target_key_id, signer_user_id, signer_key_id) DO UPDATE SET "
                "signature = excluded.signature",
                rows,
            ),
        )

    async def get_signatures(self, user_ids: Sequence[str]) -> list[tuple[str, str, str, str, str]]:
        if not user_ids:
            return []
        marks = ",".join("?" * len(user_ids))
        return await self.db.run(
            "get_signatures",
            lambda txn: txn.select(
                f"SELECT target_user_id, target_key_id, signer_user_id, signer_key_id, signature "
                f"FROM e2e_signatures WHERE target_user_id IN ({marks})",
                list(user_ids),
            ),
        )

    # Device lists

    async def add_device_list_change(self, stream_id: int, user_id: str) -> None:
        await self.db.run(
            "add_device_list_change",
            lambda txn: txn.execute(
                "INSERT INTO device_list_changes (stream_id, user_id) VALUES (?, ?)",
                (stream_id, user_id),
            ),
        )

    async def users_with_device_changes(
        self, user_ids: Iterable[str], after: int, upto: int
    ) -> set[str]:
        ids = list(user_ids)
        if not ids or after >= upto:
            return set()
        marks = ",".join("?" * len(ids))
        rows = await self.db.run(
            "users_with_device_changes",
            lambda txn: txn.select(
                f"SELECT DISTINCT user_id FROM device_list_changes WHERE user_id IN ({marks}) "
                f"AND stream_id > ? AND stream_id <= ?",
                (*ids, after, upto),
            ),
        )
        return {r[0] for r in rows}

    # To-device

    async def add_to_device(self, rows: Sequence[tuple[int, str, str, str]]) -> None:
        """(stream, user, device, message JSON)."""
        await self.db.run(
            "add_to_device",
            lambda txn: txn.execute_many(
                "INSERT INTO to_device_messages (stream_id, user_id, device_id, message_json) "
                "VALUES (?, ?, ?, ?)",
                rows,
            ),
        )

    async def take_to_device(
        self, user_id: str, device_id: str, acknowledged: int, upto: int, limit: int
    ) -> list[tuple[int, JsonDict]]:
        return await self.db.run(
            "take_to_device", _take_to_device_txn, user_id, device_id, acknowledged, upto, limit
        )

    async def record_to_device_txn(
        self, user_id: str, device_id: str, txn_id: str, now_ms: int
    ) -> bool:
        """False if this transaction was already sent."""

        def txn_fn(txn: Txn) -> bool:
            if txn.select_one(
                "SELECT 1 FROM to_device_txns WHERE user_id = ? AND device_id = ? AND txn_id = ?",
                (user_id, device_id, txn_id),
            ):
                return False
            txn.execute(
                "INSERT INTO to_device_txns (user_id, device_id, txn_id, created_ts) "
                "VALUES (?, ?, ?, ?)",
                (user_id, device_id, txn_id, now_ms),
            )
            return True

        return await self.db.run("record_to_device_txn", txn_fn)

    async def delete_device_data(self, user_id: str, device_ids: Sequence[str]) -> None:
        """Everything end-to-end about deleted devices: keys and pending messages."""

        def txn_fn(txn: Txn) -> None:
            for device_id in device_ids:
                for table in ("device_keys", "one_time_keys", "fallback_keys",
                              "to_device_messages", "to_device_txns"):  # fmt: skip
                    txn.execute(
                        f"DELETE FROM {table} WHERE user_id = ? AND device_id = ?",
                        (user_id, device_id),
                    )

        await self.db.run("delete_device_e2ee_data", txn_fn)

    # Dehydrated devices

    async def get_dehydrated_device(self, user_id: str) -> tuple[str, JsonDict] | None:
        row = await self.db.run(
            "get_dehydrated_device",
            lambda txn: txn.select_one(
                "SELECT device_id, device_data FROM dehydrated_devices WHERE user_id = ?",
                (user_id,),
            ),
        )
        return (row[0], json.loads(row[1])) if row else None

    async def set_dehydrated_device(
        self, user_id: str, device_id: str, device_data: JsonDict
    ) -> str | None:
        """Store the user's dehydrated device; returns the one it replaces, if any."""

        def txn_fn(txn: Txn) -> str | None:
            row = txn.select_one(
                "SELECT device_id FROM dehydrated_devices WHERE user_id = ?", (user_id,)
            )
            txn.execute("DELETE FROM dehydrated_devices WHERE user_id = ?", (user_id,))
            txn.execute(
                "INSERT INTO dehydrated_devices (user_id, device_id, device_data) VALUES (?, ?, ?)",
                (user_id, device_id, json.dumps(device_data)),
            )
            return str(row[0]) if row else None

        return await self.db.run("set_dehydrated_device", txn_fn)

    async def delete_dehydrated_device(self, user_id: str) -> str | None:
        def txn_fn(txn: Txn) -> str | None:
            row = txn.select_one(
                "SELECT device_id FROM dehydrated_devices WHERE user_id = ?", (user_id,)
            )
            txn.execute("DELETE FROM dehydrated_devices WHERE user_id = ?", (user_id,))
            return str(row[0]) if row else None

        return await self.db.run("delete_dehydrated_device", txn_fn)


def add_one_time_keys_txn(
    txn: Txn, user_id: str, device_id: str, keys: Sequence[tuple[str, str, str]], first_seq: int
) -> None:
    """Store (algorithm, key ID, key JSON)s: an identical re-upload is a no-op, a different
    key under a stored ID a conflict that keeps nothing of the batch. Which keys the device
    has is one query, the new ones one statement (a batch of 50 keys was 100 round trips
    on PostgreSQL)."""
    known = _stored_one_time_keys_txn(txn, user_id, device_id, keys)
    new_rows = []
    seq = first_seq
    for algorithm, key_id, key_json in keys:
        existing = known.get((algorithm, key_id))
        if existing is not None:
            if not _same_json(existing, key_json):
                raise OneTimeKeyConflict(f"{algorithm}:{key_id}")
            continue
        known[(algorithm, key_id)] = key_json
        new_rows.append((user_id, device_id, algorithm, key_id, key_json, seq))
        seq += 1
    if not new_rows:
        return
    txn.execute_many(
        "INSERT INTO one_time_keys (user_id, device_id, algorithm, key_id, key_json, "
        "seq) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (user_id, device_id, algorithm, "
        "key_id) DO NOTHING",
        new_rows,
    )
    # A concurrent upload from the same device may have stored one of these keys
    # first (PostgreSQL): the same key is a no-op, a different one a conflict.
    inserted = [(r[2], r[3], r[4]) for r in new_rows]
    stored = _stored_one_time_keys_txn(txn, user_id, device_id, inserted)
    for algorithm, key_id, key_json in inserted:
        if not _same_json(stored.get((algorithm, key_id), key_json), key_json):
            raise OneTimeKeyConflict(f"{algorithm}:{key_id}")


def _stored_one_time_keys_txn(
    txn: Txn, user_id: str, device_id: str, keys: Sequence[tuple[str, str, str]]
) -> dict[tuple[str, str], str]:
    """The JSON the device has stored under these (algorithm, key ID)s: per algorithm (a
    client uploads one), pages of 500 IDs, each an index range of the primary key."""
    by_algorithm: dict[str, set[str]] = {}
    for algorithm, key_id, _ in keys:
        by_algorithm.setdefault(algorithm, set()).add(key_id)
    found: dict[tuple[str, str], str] = {}
    for algorithm, ids in by_algorithm.items():
        key_ids = sorted(ids)
        for start in range(0, len(key_ids), 500):
            page = key_ids[start : start + 500]
            rows = txn.select(
                "SELECT key_id, key_json FROM one_time_keys WHERE user_id = ? AND device_id = ? "
                f"AND algorithm = ? AND key_id IN ({','.join('?' * len(page))})",
                (user_id, device_id, algorithm, *page),
            )
            found.update(((algorithm, key_id), key_json) for key_id, key_json in rows)
    return found


def _same_json(stored: str, uploaded: str) -> bool:
    return stored == uploaded or json.loads(stored) == json.loads(uploaded)


class DeviceSyncState(NamedTuple):
    to_device: list[tuple[int, JsonDict]]
    one_time_key_counts: dict[str, int]
    unused_fallback_key_types: list[str]


def device_sync_state_txn(
    txn: Txn, user_id: str, device_id: str, acknowledged: int, upto: int, limit: int
) -> DeviceSyncState:
    """What every /sync tells a device about its keys and messages: its next to-device
    batch (after deleting what it acknowledged), its one-time key counts and its unused
    fallback key types."""
    return DeviceSyncState(
        _take_to_device_txn(txn, user_id, device_id, acknowledged, upto, limit),
        _count_one_time_keys_txn(txn, user_id, device_id),
        _unused_fallback_key_types_txn(txn, user_id, device_id),
    )


def _count_one_time_keys_txn(txn: Txn, user_id: str, device_id: str) -> dict[str, int]:
    rows = txn.select(
        "SELECT algorithm, COUNT(*) FROM one_time_keys WHERE user_id = ? "
        "AND device_id = ? GROUP BY algorithm",
        (user_id, device_id),
    )
    return {r[0]: int(r[1]) for r in rows}


def _unused_fallback_key_types_txn(txn: Txn, user_id: str, device_id: str) -> list[str]:
    rows = txn.select(
        "SELECT algorithm FROM fallback_keys WHERE user_id = ? AND device_id = ? AND used = 0",
        (user_id, device_id),
    )
    return sorted(r[0] for r in rows)


def _take_to_device_txn(
    txn: Txn, user_id: str, device_id: str, acknowledged: int, upto: int, limit: int
) -> list[tuple[int, JsonDict]]:
    """Delete what the device acknowledged (up to ``acknowledged``); return the next batch.
    Looks before deleting: most syncs have nothing to delete, and then stay reads."""
    acknowledged_rows = txn.select(
        "SELECT 1 FROM to_device_messages WHERE user_id = ? AND device_id = ? "
        "AND stream_id <= ? LIMIT 1",
        (user_id, device_id, acknowledged),
    )
    if acknowledged_rows:
        txn.execute(
            "DELETE FROM to_device_messages WHERE user_id = ? AND device_id = ? AND stream_id <= ?",
            (user_id, device_id, acknowledged),
        )
    return [
        (int(r[0]), json.loads(r[1]))
        for r in txn.select(
            "SELECT stream_id, message_json FROM to_device_messages WHERE user_id = ? "
            "AND device_id = ? AND stream_id > ? AND stream_id <= ? ORDER BY stream_id LIMIT ?",
            (user_id, device_id, acknowledged, upto, limit),
        )
    ]


def _claim_batch_txn(txn: Txn, batch: list[list[ClaimRequest]]) -> list[ClaimedKeys]:
    return [_claim_txn(txn, requests) for requests in batch]


def _claim_txn(txn: Txn, requests: list[ClaimRequest]) -> ClaimedKeys:
    claimed: ClaimedKeys = {}
    for user_id, device_id, algorithm in requests:
        # One statement takes the oldest key (skipping one a concurrent claim on
        # PostgreSQL has locked) and deletes it. The whole key is compared, so the delete
        # finds its row by an index: by key ID alone, PostgreSQL chose the claim index and
        # walked every key of the device.
        row = txn.select_one(
            "DELETE FROM one_time_keys WHERE (user_id, device_id, algorithm, seq, key_id) = "
            "(SELECT user_id, device_id, algorithm, seq, key_id FROM one_time_keys "
            "WHERE user_id = ? AND device_id = ? AND algorithm = ? ORDER BY seq LIMIT 1"
            + txn.engine.skip_locked
            + ") RETURNING key_id, key_json",
            (user_id, device_id, algorithm),
        )
        if row is not None:
            claimed[(user_id, device_id)] = (f"{algorithm}:{row[0]}", json.loads(row[1]))
            continue
        row = txn.select_one(
            "SELECT key_id, key_json FROM fallback_keys WHERE user_id = ? "
            "AND device_id = ? AND algorithm = ?",
            (user_id, device_id, algorithm),
        )
        if row is not None:
            txn.execute(
                "UPDATE fallback_keys SET used = 1 WHERE user_id = ? AND device_id = ? "
                "AND algorithm = ?",
                (user_id, device_id, algorithm),
            )
            claimed[(user_id, device_id)] = (f"{algorithm}:{row[0]}", json.loads(row[1]))
    return claimed
