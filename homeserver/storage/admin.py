"""SQL for the admin API: listing users and rooms the way Synapse's admin API pages and
orders them, account states, statistics, and the audit log."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from homeserver.storage.engine import Database, Txn, escape_like

JsonDict = dict[str, Any]


@dataclass(frozen=True)
class AdminUser:
    user_id: str
    created_ts: int
    is_admin: bool
    deactivated: bool
    erased: bool
    locked: bool
    suspended: bool
    shadow_banned: bool
    user_type: str | None
    displayname: str | None
    avatar_url: str | None
    last_seen_ts: int | None


_USER_SELECT = (
    "SELECT u.user_id, u.created_ts, u.is_admin, u.deactivated, u.erased, u.locked, "
    "u.suspended, u.shadow_banned, u.user_type, dn.value, av.value, "
    "(SELECT MAX(c.last_seen_ts) FROM client_ips c WHERE c.user_id = u.user_id) "
    "FROM users u "
    "LEFT JOIN profiles dn ON dn.user_id = u.user_id AND dn.field = 'displayname' "
    "LEFT JOIN profiles av ON av.user_id = u.user_id AND av.field = 'avatar_url' "
)
USER_ORDERS = {
    "name": "u.user_id", "admin": "u.is_admin", "deactivated": "u.deactivated",
    "creation_ts": "u.created_ts", "displayname": "dn.value", "avatar_url": "av.value",
    "user_type": "u.user_type", "locked": "u.locked", "suspended": "u.suspended",
    "shadow_banned": "u.shadow_banned", "is_guest": "u.user_id", "approved": "u.user_id",
    "last_seen_ts": "12",
}  # fmt: skip


def _profile_text(value: Any) -> str | None:
    """A profile field as stored (JSON-encoded) when it is a string."""
    decoded = json.loads(value) if value else None
    return decoded if isinstance(decoded, str) else None


def _user(row: Sequence[Any]) -> AdminUser:
    return AdminUser(
        row[0], int(row[1]), bool(row[2]), bool(row[3]), bool(row[4]), bool(row[5]),
        bool(row[6]), bool(row[7]), row[8], _profile_text(row[9]), _profile_text(row[10]),
        int(row[11]) if row[11] is not None else None,
    )  # fmt: skip


class AdminStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    # Users

    async def list_users(
        self,
        offset: int,
        limit: int,
        order_by: str,
        ascending: bool,
        name: str | None,
        user_id: str | None,
        deactivated: bool | None,
        admins: bool | None,
        locked: bool | None,
        suspended: bool | None,
        user_types: list[str] | None,
        not_user_types: list[str] | None,
    ) -> tuple[list[AdminUser], int]:
        where: list[str] = ["1 = 1"]
        args: list[Any] = []
        if name:
            where.append("(lower(u.user_id) LIKE ? OR lower(dn.value) LIKE ?)")
            args += [f"%{name.lower()}%"] * 2
        if user_id:
            where.append("lower(u.user_id) LIKE ?")
            args.append(f"%{user_id.lower()}%")
        for column, value in (("u.deactivated", deactivated), ("u.is_admin", admins),
                              ("u.locked", locked), ("u.suspended", suspended)):  # fmt: skip
            if value is not None:
                where.append(f"{column} = ?")
                args.append(1 if value else 0)
        if user_types is not None:
            parts = []
            real = [t for t in user_types if t]
            if real:
                parts.append(f"u.user_type IN ({','.join('?' * len(real))})")
                args += real
            if "" in user_types:
                parts.append("u.user_type IS NULL")
            where.append("(" + (" OR ".join(parts) or "1 = 0") + ")")
        if not_user_types:
            real = [t for t in not_user_types if t]
            if real:
                where.append(f"(u.user_type IS NULL OR u.user_type NOT IN "
                             f"({','.join('?' * len(real))}))")  # fmt: skip
                args += real
            if "" in not_user_types:
                where.append("u.user_type IS NOT NULL")
        order = USER_ORDERS.get(order_by, "u.user_id")
        direction = "ASC" if ascending else "DESC"
        clause = " WHERE " + " AND ".join(where)

        def txn_fn(txn: Txn) -> tuple[list[AdminUser], int]:
            total = txn.select_one(
                "SELECT COUNT(*) FROM users u LEFT JOIN profiles dn ON dn.user_id = u.user_id "
                "AND dn.field = 'displayname'" + clause,
                args,
            )
            rows = txn.select(
                _USER_SELECT + clause + f" ORDER BY {order} {direction}, u.user_id {direction} "
                "LIMIT ? OFFSET ?",
                [*args, limit, offset],
            )
            return [_user(r) for r in rows], int(total[0]) if total else 0

        return await self.db.run("admin_list_users", txn_fn)

    async def get_user(self, user_id: str) -> AdminUser | None:
        row = await self.db.run(
            "admin_get_user",
            lambda txn: txn.select_one(_USER_SELECT + "WHERE u.user_id = ?", (user_id,)),
        )
        return _user(row) if row else None

    async def set_flag(self, user_id: str, flag: str, value: bool | str | None) -> None:
        assert flag in ("locked", "suspended", "shadow_banned", "is_admin", "user_type",
                        "deactivated")  # fmt: skip
        stored = (1 if value else 0) if isinstance(value, bool) else value
        await self.db.run(
            "admin_set_flag",
            lambda txn: txn.execute(
                f"UPDATE users SET {flag} = ? WHERE user_id = ?", (stored, user_id)
            ),
        )

    async def user_media(
        self, user_id: str, order_by: str, offset: int, limit: int, ascending: bool
    ) -> tuple[list[tuple[Any, ...]], int]:
        """A page of the user's uploads: (media ID, type, name, size, created, quarantined
        by, protected), ordered by one of USER_MEDIA_ORDERS."""
        column = USER_MEDIA_ORDERS[order_by]
        direction = "ASC" if ascending else "DESC"

        def txn_fn(txn: Txn) -> tuple[list[tuple[Any, ...]], int]:
            total = txn.select_one("SELECT COUNT(*) FROM media WHERE user_id = ?", (user_id,))
            rows = txn.select(
                "SELECT media_id, content_type, upload_name, size, created_ts, quarantined_by, "
                f"safe_from_quarantine FROM media WHERE user_id = ? "
                f"ORDER BY {column} {direction}, media_id {direction} LIMIT ? OFFSET ?",
                (user_id, limit, offset),
            )
            return [tuple(r) for r in rows], int(total[0]) if total else 0

        return await self.db.run("admin_user_media", txn_fn)

    async def media_statistics(
        self, search: str | None, since: int | None, until: int | None, order_by: str,
        ascending: bool, offset: int, limit: int,
    ) -> tuple[list[tuple[Any, ...]], int]:  # fmt: skip
        """(user, display name, count, bytes) of local uploaders, filtered by a substring of
        user ID or display name and by upload time, ordered by one of MEDIA_STATS_ORDERS."""
        where = ["1 = 1"]
        args: list[Any] = []
        if search:
            where.append("(m.user_id LIKE ? ESCAPE '\\' OR p.value LIKE ? ESCAPE '\\')")
            args += [f"%{escape_like(search)}%"] * 2
        if since is not None:
            where.append("m.created_ts >= ?")
            args.append(since)
        if until is not None:
            where.append("m.created_ts <= ?")
            args.append(until)
        source = (
            "FROM media m LEFT JOIN profiles p ON p.user_id = m.user_id "
            f"AND p.field = 'displayname' WHERE {' AND '.join(where)}"
        )
        direction = "ASC" if ascending else "DESC"
        order = f"{MEDIA_STATS_ORDERS[order_by]} {direction}, m.user_id {direction}"

        def txn_fn(txn: Txn) -> tuple[list[tuple[Any, ...]], int]:
            total = txn.select_one(f"SELECT COUNT(DISTINCT m.user_id) {source}", args)
            rows = txn.select(
                f"SELECT m.user_id, MAX(p.value), COUNT(*), COALESCE(SUM(m.size), 0) {source} "
                f"GROUP BY m.user_id ORDER BY {order} LIMIT ? OFFSET ?",
                (*args, limit, offset),
            )
            found = [(r[0], _profile_text(r[1]), r[2], r[3]) for r in rows]
            return found, int(total[0]) if total else 0

        return await self.db.run("admin_media_statistics", txn_fn)

    async def room_event_counts(self) -> list[tuple[str, int]]:
        rows = await self.db.run(
            "admin_room_sizes",
            lambda txn: txn.select(
                "SELECT room_id, SUM(LENGTH(json)) FROM events GROUP BY room_id "
                "ORDER BY SUM(LENGTH(json)) DESC"
            ),
        )
        return [(r[0], int(r[1] or 0)) for r in rows]

    async def all_room_ids(self) -> list[str]:
        rows = await self.db.run(
            "admin_room_ids", lambda txn: txn.select("SELECT room_id FROM rooms ORDER BY room_id")
        )
        return [r[0] for r in rows]

    # Room blocking

    async def set_blocked(self, room_id: str, admin: str | None, now_ms: int) -> None:
        def txn_fn(txn: Txn) -> None:
            txn.execute("DELETE FROM blocked_rooms WHERE room_id = ?", (room_id,))
            if admin is not None:
                txn.execute(
                    "INSERT INTO blocked_rooms (room_id, blocked_by, blocked_ts) VALUES (?, ?, ?)",
                    (room_id, admin, now_ms),
                )

        await self.db.run("admin_block_room", txn_fn)

    async def blocked_by(self, room_id: str) -> str | None:
        row = await self.db.run(
            "admin_room_blocked",
            lambda txn: txn.select_one(
                "SELECT blocked_by FROM blocked_rooms WHERE room_id = ?", (room_id,)
            ),
        )
        return str(row[0]) if row else None

    # Audit log

    async def audit(
        self, now_ms: int, admin: str, action: str, target_user: str | None,
        target_room: str | None, ip: str | None, details: JsonDict | None,
    ) -> None:  # fmt: skip
        def txn_fn(txn: Txn) -> None:
            if txn.engine.name == "postgres":
                txn.execute("LOCK TABLE admin_audit_log IN EXCLUSIVE MODE")
            row = txn.select_one("SELECT MAX(id) FROM admin_audit_log")
            next_id = (int(row[0]) if row and row[0] is not None else 0) + 1
            txn.execute(
                "INSERT INTO admin_audit_log (id, ts, admin, action, target_user, target_room, "
                "ip, details) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (next_id, now_ms, admin, action, target_user, target_room, ip,
                 json.dumps(details) if details else None),
            )  # fmt: skip

        await self.db.run("admin_audit", txn_fn)

    async def audit_entries(
        self, admin: str | None, target_user: str | None, action: str | None,
        since: int | None, until: int | None, offset: int, limit: int,
    ) -> tuple[list[JsonDict], int]:  # fmt: skip
        where: list[str] = ["1 = 1"]
        args: list[Any] = []
        for column, value in (("admin", admin), ("target_user", target_user),
                              ("action", action)):  # fmt: skip
            if value is not None:
                where.append(f"{column} = ?")
                args.append(value)
        if since is not None:
            where.append("ts >= ?")
            args.append(since)
        if until is not None:
            where.append("ts <= ?")
            args.append(until)
        clause = " WHERE " + " AND ".join(where)

        def txn_fn(txn: Txn) -> tuple[list[JsonDict], int]:
            total = txn.select_one("SELECT COUNT(*) FROM admin_audit_log" + clause, args)
            rows = txn.select(
                "SELECT id, ts, admin, action, target_user, target_room, ip, details FROM "
                f"admin_audit_log{clause} ORDER BY id DESC LIMIT ? OFFSET ?",
                [*args, limit, offset],
            )
            entries = [
                {
                    k: v
                    for k, v in (
                        ("id", r[0]),
                        ("ts", r[1]),
                        ("admin", r[2]),
                        ("action", r[3]),
                        ("target_user", r[4]),
                        ("target_room", r[5]),
                        ("ip", r[6]),
                        ("details", json.loads(r[7]) if r[7] else None),
                    )
                    if v is not None
                }
                for r in rows
            ]
            return entries, int(total[0]) if total else 0

        return await self.db.run("admin_audit_entries", txn_fn)

    async def purge_audit(self, before_ms: int) -> None:
        await self.db.run(
            "admin_purge_audit",
            lambda txn: txn.execute("DELETE FROM admin_audit_log WHERE ts < ?", (before_ms,)),
        )

    # Scheduled tasks

    async def save_task(self, task: JsonDict) -> None:
        def txn_fn(txn: Txn) -> None:
            txn.execute("DELETE FROM scheduled_tasks WHERE id = ?", (task["id"],))
            txn.execute(
                "INSERT INTO scheduled_tasks (id, action, resource_id, params, status, result, "
                "error, created_ts, updated_ts) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (task["id"], task["action"], task.get("resource_id"), json.dumps(task["params"]),
                 task["status"], json.dumps(task.get("result")) if task.get("result") else None,
                 task.get("error"), task["created_ts"], task["updated_ts"]),
            )  # fmt: skip

        await self.db.run("save_task", txn_fn)

    async def tasks(
        self, task_id: str | None = None, resource_id: str | None = None,
        statuses: Sequence[str] | None = None,
    ) -> list[JsonDict]:  # fmt: skip
        where: list[str] = ["1 = 1"]
        args: list[Any] = []
        if task_id is not None:
            where.append("id = ?")
            args.append(task_id)
        if resource_id is not None:
            where.append("resource_id = ?")
            args.append(resource_id)
        if statuses:
            where.append(f"status IN ({','.join('?' * len(statuses))})")
            args += list(statuses)
        rows = await self.db.run(
            "get_tasks",
            lambda txn: txn.select(
                "SELECT id, action, resource_id, params, status, result, error, created_ts, "
                f"updated_ts FROM scheduled_tasks WHERE {' AND '.join(where)} "
                "ORDER BY created_ts",
                args,
            ),
        )
        return [
            {"id": r[0], "action": r[1], "resource_id": r[2], "params": json.loads(r[3]),
             "status": r[4], "result": json.loads(r[5]) if r[5] else None, "error": r[6],
             "created_ts": int(r[7]), "updated_ts": int(r[8])}
            for r in rows
        ]  # fmt: skip

    # Rate-limit overrides and cross-signing replacement

    async def get_overrides(self) -> dict[str, tuple[float, int]]:
        rows = await self.db.run(
            "get_ratelimit_overrides",
            lambda txn: txn.select(
                "SELECT user_id, messages_per_second, burst_count FROM ratelimit_overrides"
            ),
        )
        return {r[0]: (float(r[1]), int(r[2])) for r in rows}

    async def set_override(self, user_id: str, value: tuple[float, int] | None) -> None:
        def txn_fn(txn: Txn) -> None:
            txn.execute("DELETE FROM ratelimit_overrides WHERE user_id = ?", (user_id,))
            if value is not None:
                txn.execute(
                    "INSERT INTO ratelimit_overrides (user_id, messages_per_second, burst_count) "
                    "VALUES (?, ?, ?)",
                    (user_id, value[0], value[1]),
                )

        await self.db.run("set_ratelimit_override", txn_fn)

    async def allow_cross_signing_replacement(self, user_id: str, until_ts: int) -> None:
        def txn_fn(txn: Txn) -> None:
            txn.execute("DELETE FROM cross_signing_replacement WHERE user_id = ?", (user_id,))
            txn.execute(
                "INSERT INTO cross_signing_replacement (user_id, until_ts) VALUES (?, ?)",
                (user_id, until_ts),
            )

        await self.db.run("allow_cross_signing_replacement", txn_fn)

    async def cross_signing_replacement_until(self, user_id: str) -> int | None:
        row = await self.db.run(
            "cross_signing_replacement_until",
            lambda txn: txn.select_one(
                "SELECT until_ts FROM cross_signing_replacement WHERE user_id = ?", (user_id,)
            ),
        )
        return int(row[0]) if row else None

    async def count_sent_invites(self, user_id: str, since_ms: int) -> int:
        row = await self.db.run(
            "count_sent_invites",
            lambda txn: txn.select_one(
                "SELECT COUNT(*) FROM room_memberships m JOIN events e ON e.event_id = m.event_id "
                "WHERE m.sender = ? AND m.membership = 'invite' AND m.user_id != m.sender "
                "AND e.origin_server_ts >= ?",
                (user_id, since_ms),
            ),
        )
        return int(row[0]) if row else 0

    async def count_joined_rooms_ever(self, user_id: str) -> int:
        row = await self.db.run(
            "count_joined_rooms_ever",
            lambda txn: txn.select_one(
                "SELECT COUNT(DISTINCT room_id) FROM room_memberships "
                "WHERE user_id = ? AND membership = 'join'",
                (user_id,),
            ),
        )
        return int(row[0]) if row else 0

    # Server notices

    async def notice_room(self, user_id: str) -> str | None:
        row = await self.db.run(
            "get_notice_room",
            lambda txn: txn.select_one(
                "SELECT room_id FROM server_notice_rooms WHERE user_id = ?", (user_id,)
            ),
        )
        return str(row[0]) if row else None

    async def set_notice_room(self, user_id: str, room_id: str) -> None:
        def txn_fn(txn: Txn) -> None:
            txn.execute("DELETE FROM server_notice_rooms WHERE user_id = ?", (user_id,))
            txn.execute(
                "INSERT INTO server_notice_rooms (user_id, room_id) VALUES (?, ?)",
                (user_id, room_id),
            )

        await self.db.run("set_notice_room", txn_fn)

    async def notice_txn(self, admin_id: str, txn_id: str) -> str | None:
        row = await self.db.run(
            "get_notice_txn",
            lambda txn: txn.select_one(
                "SELECT event_id FROM server_notice_txns WHERE admin_id = ? AND txn_id = ?",
                (admin_id, txn_id),
            ),
        )
        return str(row[0]) if row else None

    async def record_notice_txn(self, admin_id: str, txn_id: str, event_id: str) -> None:
        await self.db.run(
            "record_notice_txn",
            lambda txn: txn.execute(
                "INSERT INTO server_notice_txns (admin_id, txn_id, event_id) VALUES (?, ?, ?) "
                "ON CONFLICT (admin_id, txn_id) DO NOTHING",
                (admin_id, txn_id, event_id),
            ),
        )


# Synapse's order_by names for a user's media, and the column each sorts by (we do not
# track reads, so last_access_ts sorts as created_ts).
USER_MEDIA_ORDERS = {
    "media_id": "media_id", "upload_name": "upload_name", "created_ts": "created_ts",
    "last_access_ts": "created_ts", "media_length": "size", "media_type": "content_type",
    "quarantined_by": "quarantined_by", "safe_from_quarantine": "safe_from_quarantine",
}  # fmt: skip

# Synapse's order_by names for media statistics, and the SQL each sorts by.
MEDIA_STATS_ORDERS = {
    "user_id": "m.user_id", "displayname": "MAX(p.value)", "media_count": "COUNT(*)",
    "media_length": "COALESCE(SUM(m.size), 0)",
}  # fmt: skip
