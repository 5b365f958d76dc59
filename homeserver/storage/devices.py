"""SQL for devices, their access tokens and their client IP records."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from homeserver.storage.engine import Database, Txn


@dataclass(frozen=True)
class DeviceRecord:
    user_id: str
    device_id: str
    display_name: str | None
    last_seen_ip: str | None
    last_seen_ts: int | None
    last_seen_user_agent: str | None


# Each device with its latest sighting (the only one kept).
_DEVICE_SELECT = """
SELECT d.user_id, d.device_id, d.display_name, c.ip, c.last_seen_ts, c.user_agent
FROM devices d
LEFT JOIN client_ips c ON c.user_id = d.user_id AND c.device_id = d.device_id
"""


@dataclass(frozen=True)
class TokenOwner:
    user_id: str
    device_id: str
    expires_ts: int | None
    # The refresh token that minted this access token, until it is first used.
    minted_by: str | None
    locked: bool = False
    suspended: bool = False
    shadow_banned: bool = False


@dataclass(frozen=True)
class RefreshRecord:
    user_id: str
    device_id: str
    expires_ts: int | None
    next_refresh: str | None
    minted_by: str | None


class DeviceStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def ensure_device(
        self, user_id: str, device_id: str, display_name: str | None, now_ms: int
    ) -> bool:
        """Create the device unless it exists. Returns True if it was created."""

        def txn_fn(txn: Txn) -> bool:
            if txn.select_one(
                "SELECT 1 FROM devices WHERE user_id = ? AND device_id = ?", (user_id, device_id)
            ):
                return False
            txn.execute(
                "INSERT INTO devices (user_id, device_id, display_name, created_ts) "
                "VALUES (?, ?, ?, ?)",
                (user_id, device_id, display_name, now_ms),
            )
            return True

        return await self.db.run("ensure_device", txn_fn)

    async def add_access_token(
        self, token_hash: str, user_id: str, device_id: str, now_ms: int,
        expires_ts: int | None = None,
    ) -> None:  # fmt: skip
        await self.db.run(
            "add_access_token",
            lambda txn: txn.execute(
                "INSERT INTO access_tokens (token_hash, user_id, device_id, created_ts, "
                "expires_ts) VALUES (?, ?, ?, ?, ?)",
                (token_hash, user_id, device_id, now_ms, expires_ts),
            ),
        )

    async def get_token_owner(self, token_hash: str) -> TokenOwner | None:
        row = await self.db.run(
            "get_token_owner",
            lambda txn: txn.select_one(
                "SELECT t.user_id, t.device_id, t.expires_ts, t.minted_by, u.locked, "
                "u.suspended, u.shadow_banned FROM access_tokens t "
                "JOIN users u ON u.user_id = t.user_id "
                "WHERE t.token_hash = ? AND u.deactivated = 0",
                (token_hash,),
            ),
        )
        if not row:
            return None
        return TokenOwner(row[0], row[1], row[2], row[3], bool(row[4]), bool(row[5]), bool(row[6]))

    # Refresh tokens

    async def add_session_tokens(
        self, user_id: str, device_id: str, access_hash: str, access_expires: int,
        refresh_hash: str, refresh_expires: int | None, now_ms: int,
        exchanged: str | None = None,
    ) -> None:  # fmt: skip
        """A refreshable pair; with ``exchanged``, the refresh token it replaces (whose
        earlier, unused replacement pair is revoked: its answer was lost)."""

        def txn_fn(txn: Txn) -> None:
            if exchanged is not None:
                row = txn.select_one(
                    "SELECT next_refresh, next_access FROM refresh_tokens WHERE token_hash = ?",
                    (exchanged,),
                )
                if row and row[0]:
                    txn.execute("DELETE FROM refresh_tokens WHERE token_hash = ?", (row[0],))
                    txn.execute("DELETE FROM access_tokens WHERE token_hash = ?", (row[1],))
                txn.execute(
                    "UPDATE refresh_tokens SET next_refresh = ?, next_access = ? "
                    "WHERE token_hash = ?",
                    (refresh_hash, access_hash, exchanged),
                )
            txn.execute(
                "INSERT INTO access_tokens (token_hash, user_id, device_id, created_ts, "
                "expires_ts, minted_by) VALUES (?, ?, ?, ?, ?, ?)",
                (access_hash, user_id, device_id, now_ms, access_expires, exchanged),
            )
            txn.execute(
                "INSERT INTO refresh_tokens (token_hash, user_id, device_id, created_ts, "
                "expires_ts, minted_by) VALUES (?, ?, ?, ?, ?, ?)",
                (refresh_hash, user_id, device_id, now_ms, refresh_expires, exchanged),
            )

        await self.db.run("add_session_tokens", txn_fn)

    async def get_refresh_token(self, token_hash: str) -> RefreshRecord | None:
        row = await self.db.run(
            "get_refresh_token",
            lambda txn: txn.select_one(
                "SELECT r.user_id, r.device_id, r.expires_ts, r.next_refresh, r.minted_by "
                "FROM refresh_tokens r JOIN users u ON u.user_id = r.user_id "
                "WHERE r.token_hash = ? AND u.deactivated = 0",
                (token_hash,),
            ),
        )
        return RefreshRecord(row[0], row[1], row[2], row[3], row[4]) if row else None

    async def retire_refresh_token(self, retired: str) -> None:
        """The pair ``retired`` was exchanged for has been used: ``retired`` is gone."""

        def txn_fn(txn: Txn) -> None:
            txn.execute("DELETE FROM refresh_tokens WHERE token_hash = ?", (retired,))
            txn.execute(
                "UPDATE refresh_tokens SET minted_by = NULL WHERE minted_by = ?", (retired,)
            )
            txn.execute("UPDATE access_tokens SET minted_by = NULL WHERE minted_by = ?", (retired,))

        await self.db.run("retire_refresh_token", txn_fn)

    async def get_devices(self, user_id: str) -> list[DeviceRecord]:
        rows = await self.db.run(
            "get_devices",
            lambda txn: txn.select(
                _DEVICE_SELECT + " WHERE d.user_id = ? ORDER BY d.device_id", (user_id,)
            ),
        )
        return [DeviceRecord(*row) for row in rows]

    async def get_device(self, user_id: str, device_id: str) -> DeviceRecord | None:
        rows = await self.db.run(
            "get_device",
            lambda txn: txn.select(
                _DEVICE_SELECT + " WHERE d.user_id = ? AND d.device_id = ?", (user_id, device_id)
            ),
        )
        return DeviceRecord(*rows[0]) if rows else None

    async def update_display_name(self, user_id: str, device_id: str, name: str | None) -> bool:
        def txn_fn(txn: Txn) -> bool:
            txn.execute(
                "UPDATE devices SET display_name = ? WHERE user_id = ? AND device_id = ?",
                (name, user_id, device_id),
            )
            return txn.rowcount > 0

        return await self.db.run("update_device_display_name", txn_fn)

    async def delete_devices(self, user_id: str, device_ids: Iterable[str]) -> list[str]:
        """Delete devices with their tokens and IP records; returns the token hashes revoked."""
        ids = list(device_ids)

        def txn_fn(txn: Txn) -> list[str]:
            revoked: list[str] = []
            for device_id in ids:
                args = (user_id, device_id)
                revoked.extend(
                    r[0]
                    for r in txn.select(
                        "SELECT token_hash FROM access_tokens WHERE user_id = ? AND device_id = ?",
                        args,
                    )
                )
                txn.execute("DELETE FROM access_tokens WHERE user_id = ? AND device_id = ?", args)
                txn.execute("DELETE FROM refresh_tokens WHERE user_id = ? AND device_id = ?", args)
                txn.execute("DELETE FROM client_ips WHERE user_id = ? AND device_id = ?", args)
                txn.execute("DELETE FROM devices WHERE user_id = ? AND device_id = ?", args)
            return revoked

        return await self.db.run("delete_devices", txn_fn)

    async def get_device_ids(self, user_id: str) -> list[str]:
        rows = await self.db.run(
            "get_device_ids",
            lambda txn: txn.select("SELECT device_id FROM devices WHERE user_id = ?", (user_id,)),
        )
        return [r[0] for r in rows]

    # Client IP records

    async def upsert_client_ips(self, rows: list[tuple[str, str, str, str, int]]) -> None:
        """Write a batch of (user, device, ip, user agent, last seen) sightings at once: each
        session keeps only its latest address and user agent."""

        def txn_fn(txn: Txn) -> None:
            # Skip sightings of devices deleted while the batch waited, so that a logout
            # leaves no IP behind.
            txn.execute_many(
                "INSERT INTO client_ips (user_id, device_id, ip, user_agent, last_seen_ts) "
                "SELECT ?, ?, ?, ?, ? "
                "WHERE EXISTS (SELECT 1 FROM devices WHERE user_id = ? AND device_id = ?) "
                "ON CONFLICT (user_id, device_id) DO UPDATE SET ip = excluded.ip, "
                "user_agent = excluded.user_agent, last_seen_ts = excluded.last_seen_ts "
                "WHERE client_ips.last_seen_ts <= excluded.last_seen_ts",
                [(*row, row[0], row[1]) for row in rows],
            )

        await self.db.run("upsert_client_ips", txn_fn)

    async def purge_client_ips_before(self, cutoff_ms: int) -> int:
        def txn_fn(txn: Txn) -> int:
            txn.execute("DELETE FROM client_ips WHERE last_seen_ts < ?", (cutoff_ms,))
            return txn.rowcount

        return await self.db.run("purge_client_ips", txn_fn)

    async def get_client_ips(self, user_id: str) -> list[tuple[str, str, str, int]]:
        """Each session's latest (device, ip, user agent, last seen): for export and admins."""
        return await self.db.run(
            "get_client_ips",
            lambda txn: txn.select(
                "SELECT device_id, ip, user_agent, last_seen_ts FROM client_ips "
                "WHERE user_id = ? ORDER BY last_seen_ts DESC",
                (user_id,),
            ),
        )
