"""SQL for key backup. Every write runs in one transaction that first locks the user's
backup version row, so concurrent uploads from two devices are serialised in the database."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import msgspec

from homeserver.storage.engine import Database, Txn
from keybackup.rules import KeyQuality, should_replace

JsonDict = dict[str, Any]


@dataclass(frozen=True)
class BackupVersion:
    version: int
    algorithm: str
    auth_data: JsonDict
    etag: int
    count: int


@dataclass(frozen=True)
class BackupKey:
    room_id: str
    session_id: str
    quality: KeyQuality
    # A JSON object as sent by the client, or (when read back) its stored JSON text as Raw.
    session_data: JsonDict | msgspec.Raw

    def to_json(self) -> JsonDict:
        return {
            "first_message_index": self.quality.first_message_index,
            "forwarded_count": self.quality.forwarded_count,
            "is_verified": self.quality.is_verified,
            "session_data": self.session_data,
        }


class NoBackup(Exception):
    """No such (non-deleted) backup version."""


class WrongVersion(Exception):
    def __init__(self, current: int) -> None:
        super().__init__(current)
        self.current = current


def _version_row(row: tuple[Any, ...]) -> BackupVersion:
    return BackupVersion(int(row[0]), row[1], json.loads(row[2]), int(row[3]), int(row[4]))


_VERSION_COLUMNS = "version, algorithm, auth_data, etag, key_count"


class KeyBackupStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def create_version(self, user_id: str, algorithm: str, auth_data: JsonDict) -> int:
        def txn_fn(txn: Txn) -> int:
            _lock_user(txn, user_id)
            # Numbers are never reused, even after a version is deleted.
            row = txn.select_one(
                "SELECT MAX(version) FROM backup_versions WHERE user_id = ?", (user_id,)
            )
            version = (int(row[0]) if row and row[0] is not None else 0) + 1
            txn.execute(
                "INSERT INTO backup_versions (user_id, version, algorithm, auth_data, etag, "
                "key_count) VALUES (?, ?, ?, ?, 0, 0)",
                (user_id, version, algorithm, json.dumps(auth_data)),
            )
            return version

        return await self.db.run("create_backup_version", txn_fn)

    async def get_version(self, user_id: str, version: int | None) -> BackupVersion | None:
        """A version, or the current (latest non-deleted) one with ``version=None``."""

        def txn_fn(txn: Txn) -> BackupVersion | None:
            return _get_version(txn, user_id, version)

        return await self.db.run("get_backup_version", txn_fn)

    async def update_auth_data(self, user_id: str, version: int, auth_data: JsonDict) -> None:
        await self.db.run(
            "update_backup_auth_data",
            lambda txn: txn.execute(
                "UPDATE backup_versions SET auth_data = ? WHERE user_id = ? AND version = ? "
                "AND deleted = 0",
                (json.dumps(auth_data), user_id, version),
            ),
        )

    async def delete_version(self, user_id: str, version: int) -> bool:
        def txn_fn(txn: Txn) -> bool:
            txn.execute(
                "UPDATE backup_versions SET deleted = 1 WHERE user_id = ? AND version = ? "
                "AND deleted = 0",
                (user_id, version),
            )
            if txn.rowcount == 0:
                # Deleting an already deleted version succeeds (the spec); unknown is False.
                row = txn.select_one(
                    "SELECT 1 FROM backup_versions WHERE user_id = ? AND version = ?",
                    (user_id, version),
                )
                return row is not None
            txn.execute(
                "DELETE FROM backup_keys WHERE user_id = ? AND version = ?", (user_id, version)
            )
            return True

        return await self.db.run("delete_backup_version", txn_fn)

    async def upload_keys(
        self, user_id: str, version: int, keys: Iterable[BackupKey]
    ) -> tuple[int, int]:
        """Store each key unless the stored copy is as good; returns (etag, count)."""
        keys = list(keys)

        def txn_fn(txn: Txn) -> tuple[int, int]:
            current = _lock_current(txn, user_id, version)
            by_room: dict[str, list[BackupKey]] = {}
            for key in keys:
                by_room.setdefault(key.room_id, []).append(key)
            inserts: list[tuple[Any, ...]] = []
            updates: list[tuple[Any, ...]] = []
            for room_id, room_keys in by_room.items():
                # Only the sessions in this upload are read, so an upload costs the same
                # however large the backup has grown.
                stored = _stored_qualities(
                    txn, user_id, version, room_id, [k.session_id for k in room_keys]
                )
                for key in room_keys:
                    existing = stored.get(key.session_id)
                    if existing is not None and not should_replace(existing, key.quality):
                        continue
                    blob = msgspec.json.encode(key.session_data).decode()
                    args = (
                        key.quality.first_message_index, key.quality.forwarded_count,
                        int(key.quality.is_verified), blob, user_id, version, room_id,
                        key.session_id,
                    )  # fmt: skip
                    (inserts if existing is None else updates).append(args)
                    stored[key.session_id] = key.quality
            txn.execute_many(
                "INSERT INTO backup_keys (first_message_index, forwarded_count, is_verified, "
                "session_data, user_id, version, room_id, session_id) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                inserts,
            )
            txn.execute_many(
                "UPDATE backup_keys SET first_message_index = ?, forwarded_count = ?, "
                "is_verified = ?, session_data = ? WHERE user_id = ? AND version = ? "
                "AND room_id = ? AND session_id = ?",
                updates,
            )
            changed, added = len(inserts) + len(updates), len(inserts)
            return _bump(txn, user_id, current, changed, added)

        return await self.db.run("upload_backup_keys", txn_fn)

    async def delete_keys(
        self, user_id: str, version: int, room_id: str | None, session_id: str | None
    ) -> tuple[int, int]:
        def txn_fn(txn: Txn) -> tuple[int, int]:
            current = _lock_current(txn, user_id, version)
            sql = "DELETE FROM backup_keys WHERE user_id = ? AND version = ?"
            args: list[Any] = [user_id, version]
            if room_id is not None:
                sql += " AND room_id = ?"
                args.append(room_id)
            if session_id is not None:
                sql += " AND session_id = ?"
                args.append(session_id)
            txn.execute(sql, args)
            removed = txn.rowcount
            return _bump(txn, user_id, current, removed, -removed)

        return await self.db.run("delete_backup_keys", txn_fn)

    async def get_keys(
        self, user_id: str, version: int, room_id: str | None, session_id: str | None
    ) -> list[BackupKey]:
        sql = (
            "SELECT room_id, session_id, first_message_index, forwarded_count, is_verified, "
            "session_data FROM backup_keys WHERE user_id = ? AND version = ?"
        )
        args: list[Any] = [user_id, version]
        if room_id is not None:
            sql += " AND room_id = ?"
            args.append(room_id)
        if session_id is not None:
            sql += " AND session_id = ?"
            args.append(session_id)
        rows = await self.db.run("get_backup_keys", lambda txn: txn.select(sql, args))
        # The stored blob is passed through as raw JSON: it is never parsed on the way out.
        return [
            BackupKey(
                r[0], r[1], KeyQuality(bool(r[4]), int(r[2]), int(r[3])), msgspec.Raw(r[5].encode())
            )
            for r in rows
        ]


def _stored_qualities(
    txn: Txn, user_id: str, version: int, room_id: str, session_ids: list[str]
) -> dict[str, KeyQuality]:
    stored: dict[str, KeyQuality] = {}
    unique = list(dict.fromkeys(session_ids))
    for start in range(0, len(unique), 500):
        chunk = unique[start : start + 500]
        for session_id, fmi, forwarded, verified in txn.select(
            "SELECT session_id, first_message_index, forwarded_count, is_verified FROM backup_keys "
            f"WHERE user_id = ? AND version = ? AND room_id = ? "
            f"AND session_id IN ({','.join('?' * len(chunk))})",
            (user_id, version, room_id, *chunk),
        ):
            stored[session_id] = KeyQuality(bool(verified), int(fmi), int(forwarded))
    return stored


def _get_version(
    txn: Txn, user_id: str, version: int | None, lock: bool = False
) -> BackupVersion | None:
    suffix = txn.engine.for_update if lock else ""
    if version is None:
        row = txn.select_one(
            f"SELECT {_VERSION_COLUMNS} FROM backup_versions WHERE user_id = ? AND deleted = 0 "
            f"ORDER BY version DESC LIMIT 1{suffix}",
            (user_id,),
        )
    else:
        row = txn.select_one(
            f"SELECT {_VERSION_COLUMNS} FROM backup_versions WHERE user_id = ? AND version = ? "
            f"AND deleted = 0{suffix}",
            (user_id, version),
        )
    return _version_row(row) if row else None


def _lock_user(txn: Txn, user_id: str) -> None:
    """Every backup write of one user takes this lock first, so creating a version, and
    uploads and deletes of keys, happen one at a time per user in the database."""
    txn.select_one(
        f"SELECT user_id FROM users WHERE user_id = ?{txn.engine.for_update}", (user_id,)
    )


def _lock_current(txn: Txn, user_id: str, version: int) -> BackupVersion:
    """Lock the user's current version row; refuse writes to any other version."""
    _lock_user(txn, user_id)
    current = _get_version(txn, user_id, None, lock=True)
    if current is None:
        raise NoBackup()
    if current.version != version:
        if _get_version(txn, user_id, version) is None:
            raise NoBackup()
        raise WrongVersion(current.version)
    return current


def _bump(
    txn: Txn, user_id: str, current: BackupVersion, changed: int, added: int
) -> tuple[int, int]:
    """Move the etag exactly when stored keys changed, and keep the count beside it."""
    if changed == 0:
        return current.etag, current.count
    etag, count = current.etag + 1, current.count + added
    txn.execute(
        "UPDATE backup_versions SET etag = ?, key_count = ? WHERE user_id = ? AND version = ?",
        (etag, count, user_id, current.version),
    )
    return etag, count
