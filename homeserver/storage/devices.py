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


# The most recent sighting of each device, from the retained client IP records.
_DEVICE_SELECT = """
SELECT d.user_id, d.device_id, d.display_name, c.ip, c.last_seen_ts, c.user_agent
FROM devices d
LEFT JOIN client_ips c ON c.user_id = d.user_id AND c.device_id = d.device_id
  AND c.last_seen_ts = (
    SELECT MAX(c2.last_seen_ts) FROM client_ips c2
    WHERE c2.user_id = d.user_id AND c2.device_id = d.device_id
  )
"""


def _dedupe(rows: list[tuple]) -> list[DeviceRecord]:
    seen: dict[tuple[str, str], DeviceRecord] = {}
    for row in rows:
        key = (row[0], row[1])
        if key not in seen:
            seen[key] = DeviceRecord(*row)
    return list(seen.values())


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
        self, token_hash: str, user_id: str, device_id: str, now_ms: int
    ) -> None:
        await self.db.run(
            "add_access_token",
            lambda txn: txn.execute(
                "INSERT INTO access_tokens (token_hash, user_id, device_id, created_ts) "
                "VALUES (?, ?, ?, ?)",
                (token_hash, user_id, device_id, now_ms),
            ),
        )

    async def get_token_owner(self, token_hash: str) -> tuple[str, str] | None:
        row = await self.db.run(
            "get_token_owner",
            lambda txn: txn.select_one(
                "SELECT t.user_id, t.device_id FROM access_tokens t "
                "JOIN users u ON u.user_id = t.user_id "
                "WHERE t.token_hash = ? AND u.deactivated = 0",
                (token_hash,),
            ),
        )
        return (row[0], row[1]) if row else None

    async def get_devices(self, user_id: str) -> list[DeviceRecord]:
        rows = await self.db.run(
            "get_devices",
            lambda txn: txn.select(
                _DEVICE_SELECT + " WHERE d.user_id = ? ORDER BY d.device_id", (user_id,)
            ),
        )
        return _dedupe(rows)

    async def get_device(self, user_id: str, device_id: str) -> DeviceRecord | None:
        rows = await self.db.run(
            "get_device",
            lambda txn: txn.select(
                _DEVICE_SELECT + " WHERE d.user_id = ? AND d.device_id = ?", (user_id, device_id)
            ),
        )
        found = _dedupe(rows)
        return found[0] if found else None

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
        """Write a batch of (user, device, ip, user agent, last seen) sightings at once."""

        def txn_fn(txn: Txn) -> None:
            # Skip sightings of devices deleted while the batch waited, so that a logout
            # leaves no IP behind.
            txn.execute_many(
                "INSERT INTO client_ips (user_id, device_id, ip, user_agent, last_seen_ts) "
                "SELECT ?, ?, ?, ?, ? "
                "WHERE EXISTS (SELECT 1 FROM devices WHERE user_id = ? AND device_id = ?) "
                "ON CONFLICT (user_id, device_id, ip, user_agent) "
                "DO UPDATE SET last_seen_ts = excluded.last_seen_ts "
                "WHERE client_ips.last_seen_ts < excluded.last_seen_ts",
                [(*row, row[0], row[1]) for row in rows],
            )

        await self.db.run("upsert_client_ips", txn_fn)

    async def purge_client_ips_before(self, cutoff_ms: int) -> int:
        def txn_fn(txn: Txn) -> int:
            txn.execute("DELETE FROM client_ips WHERE last_seen_ts < ?", (cutoff_ms,))
            return txn.rowcount

        return await self.db.run("purge_client_ips", txn_fn)

    async def get_client_ips(self, user_id: str) -> list[tuple[str, str, str, int]]:
        """Every retained (device, ip, user agent, last seen) of a user: for export and admins."""
        return await self.db.run(
            "get_client_ips",
            lambda txn: txn.select(
                "SELECT device_id, ip, user_agent, last_seen_ts FROM client_ips "
                "WHERE user_id = ? ORDER BY last_seen_ts DESC",
                (user_id,),
            ),
        )
