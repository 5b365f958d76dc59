"""SQL for finding people and messages: the user directory, full-text search, reports."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from homeserver.storage.engine import Database, Txn


def _like(term: str) -> str:
    """A lower-case LIKE pattern that every match of ``term`` satisfies. SQL folds only ASCII
    case and display names are stored as JSON text, so any other character (and the quote
    and backslash, which JSON escapes) becomes a wildcard; rows are then checked in Python."""
    pieces = ["%"]
    for c in term:
        if c.isascii() and c.isprintable() and c not in '"\\':
            pieces.append("\\" + c if c in "%_" else c.lower())
        elif pieces[-1] != "%":
            pieces.append("%")
    if pieces[-1] != "%":
        pieces.append("%")
    return "".join(pieces)


def _matches(term: str, user_id: str, display_name: str | None) -> bool:
    folded = term.casefold()
    return folded in user_id.casefold() or (
        display_name is not None and folded in display_name.casefold()
    )


class DiscoveryStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    # User directory

    async def search_users(
        self, searcher: str, term: str, limit: int, all_users: bool
    ) -> list[tuple[str, str | None, str | None]]:
        """(user, display name, avatar) of users matching ``term`` (case-insensitively) whom
        the searcher may find: everyone (``all_users``), or people sharing a room with them
        or in a room anyone may join or read."""
        like = _like(term)

        def txn_fn(txn: Txn) -> list[tuple[str, str | None, str | None]]:
            visible = ""
            args: list[Any] = []
            if not all_users:
                visible = (
                    " AND (u.user_id = ? OR u.user_id IN ("
                    "SELECT m.state_key FROM current_state m WHERE m.type = 'm.room.member' "
                    "AND m.membership = 'join' AND m.room_id IN ("
                    "SELECT s.room_id FROM current_state s WHERE s.type = 'm.room.member' "
                    "AND s.state_key = ? AND s.membership = 'join' "
                    "UNION SELECT r.room_id FROM rooms r WHERE r.is_public = 1 "
                    # Rooms anyone may join or read count as public too (canonical JSON).
                    "UNION SELECT j.room_id FROM current_state j JOIN events e "
                    "ON e.event_id = j.event_id WHERE j.type = 'm.room.join_rules' "
                    'AND e.json LIKE \'%"join_rule":"public"%\' '
                    "UNION SELECT h.room_id FROM current_state h JOIN events e "
                    "ON e.event_id = h.event_id WHERE h.type = 'm.room.history_visibility' "
                    'AND e.json LIKE \'%"history_visibility":"world_readable"%\')))'
                )
                args = [searcher, searcher]
            sql = (
                "SELECT u.user_id, dn.value, av.value FROM users u "
                "LEFT JOIN profiles dn ON dn.user_id = u.user_id AND dn.field = 'displayname' "
                "LEFT JOIN profiles av ON av.user_id = u.user_id AND av.field = 'avatar_url' "
                "WHERE u.deactivated = 0 AND (lower(u.user_id) LIKE ? ESCAPE '\\' "
                "OR lower(dn.value) LIKE ? ESCAPE '\\')" + visible + " ORDER BY u.user_id "
                "LIMIT ? OFFSET ?"
            )
            found: list[tuple[str, str | None, str | None]] = []
            batch, offset = max(limit, 100), 0
            while len(found) < limit:
                rows = txn.select(sql, [like, like, *args, batch, offset])
                for user, name, avatar in rows:
                    name = json.loads(name) if name else None
                    if _matches(term, user, name if isinstance(name, str) else None):
                        found.append((user, name, json.loads(avatar) if avatar else None))
                if len(rows) < batch:
                    break
                offset += batch
            return found[:limit]

        return await self.db.run("search_users", txn_fn)

    async def search_remote_members(
        self, searcher: str, term: str, server_name: str, limit: int
    ) -> list[tuple[str, str | None, str | None]]:
        """Other servers' users who share a room with the searcher and match ``term``, with
        the name and avatar their membership event shows (we hold no profile for them)."""

        def txn_fn(txn: Txn) -> list[tuple[str, str | None, str | None]]:
            rows = txn.select(
                "SELECT m.state_key, e.json FROM current_state m "
                "JOIN events e ON e.event_id = m.event_id "
                "WHERE m.type = 'm.room.member' AND m.membership = 'join' "
                "AND m.state_key NOT LIKE ? AND m.room_id IN ("
                "SELECT s.room_id FROM current_state s WHERE s.type = 'm.room.member' "
                "AND s.state_key = ? AND s.membership = 'join')",
                ("%:" + server_name, searcher),
            )
            found: dict[str, tuple[str, str | None, str | None]] = {}
            for user, text in rows:
                content = json.loads(text).get("content") or {}
                name, avatar = content.get("displayname"), content.get("avatar_url")
                name = name if isinstance(name, str) else None
                if user not in found and _matches(term, user, name):
                    found[user] = (user, name, avatar if isinstance(avatar, str) else None)
            return sorted(found.values())[:limit]

        return await self.db.run("search_remote_members", txn_fn)

    # Full-text search

    async def search_events(
        self,
        room_ids: Sequence[str],
        term: str,
        keys: Sequence[str],
        order_by_rank: bool,
        before: int | None,
        offset: int,
        limit: int,
        senders: Sequence[str] | None = None,
    ) -> tuple[list[tuple[str, float, int]], int]:
        """((event ID, rank, stream) page, total count) of matches in the given rooms (by
        the given senders: filtered before paging, so pages are full and counts right)."""
        if not room_ids:
            return [], 0
        marks = ",".join("?" * len(room_ids))
        key_marks = ",".join("?" * len(keys))

        def txn_fn(txn: Txn) -> tuple[list[tuple[str, float, int]], int]:
            if txn.engine.name == "postgres":
                match = "vector @@ plainto_tsquery('simple', ?)"
                rank = "ts_rank(vector, plainto_tsquery('simple', ?))"
                query_args: list[Any] = [term]
            else:
                match = "event_search MATCH ?"
                rank = "-bm25(event_search)"
                words = [w for w in term.replace('"', " ").split() if w]
                query_args = [" ".join(f'"{w}"' for w in words) or '""']
            where = f"{match} AND room_id IN ({marks}) AND key IN ({key_marks})" + (
                " AND stream_ordering < ?" if before is not None else ""
            )
            args = [*query_args, *room_ids, *keys] + ([before] if before is not None else [])
            if senders is not None:
                sender_marks = ",".join("?" * len(senders)) or "NULL"
                where += (
                    f" AND event_id IN (SELECT event_id FROM events WHERE sender IN "
                    f"({sender_marks}))"
                )
                args += list(senders)
            total = txn.select_one(f"SELECT COUNT(*) FROM event_search WHERE {where}", args)
            order = "score DESC, stream_ordering DESC" if order_by_rank else "stream_ordering DESC"
            rank_args = query_args if txn.engine.name == "postgres" else []
            rows = txn.select(
                f"SELECT event_id, {rank} AS score, stream_ordering FROM event_search "
                f"WHERE {where} ORDER BY {order} LIMIT ? OFFSET ?",
                [*rank_args, *args, limit, offset],
            )
            return [(r[0], float(r[1]), int(r[2])) for r in rows], int(total[0]) if total else 0

        return await self.db.run("search_events", txn_fn)

    # Reports

    async def add_report(
        self,
        reporter: str,
        room_id: str | None,
        event_id: str | None,
        target_user_id: str | None,
        reason: str | None,
        score: int | None,
        now_ms: int,
    ) -> int:
        def txn_fn(txn: Txn) -> int:
            if txn.engine.name == "postgres":
                # Concurrent reports would otherwise take the same MAX(id) + 1.
                txn.execute("LOCK TABLE reports IN EXCLUSIVE MODE")
            row = txn.select_one("SELECT MAX(id) FROM reports")
            report_id = (int(row[0]) if row and row[0] is not None else 0) + 1
            txn.execute(
                "INSERT INTO reports (id, reporter, room_id, event_id, target_user_id, reason, "
                "score, received_ts) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (report_id, reporter, room_id, event_id, target_user_id, reason, score, now_ms),
            )
            return report_id

        return await self.db.run("add_report", txn_fn)

    async def delete_report(self, report_id: int) -> None:
        await self.db.run(
            "delete_report",
            lambda txn: txn.execute("DELETE FROM reports WHERE id = ?", (report_id,)),
        )

    async def list_reports(
        self,
        kind: str,
        filters: dict[str, str],
        forwards: bool,
        limit: int,
        offset: int,
    ) -> tuple[list[tuple[Any, ...]], int]:
        """One page of reports of one kind ('event', 'room' or 'user'), and how many match.

        `filters` maps a column (room_id, reporter, target_user_id) to the value it must have.
        """
        kind_clause = {
            "event": "event_id IS NOT NULL",
            "room": "event_id IS NULL AND target_user_id IS NULL",
            "user": "target_user_id IS NOT NULL",
        }[kind]
        clauses = [kind_clause]
        args: list[Any] = []
        for column in ("room_id", "reporter", "target_user_id"):
            if column in filters:
                clauses.append(f"{column} = ?")
                args.append(filters[column])
        where = " AND ".join(clauses)
        order = "ASC" if forwards else "DESC"

        def txn_fn(txn: Txn) -> tuple[list[tuple[Any, ...]], int]:
            rows = txn.select(
                f"SELECT {_REPORT_COLUMNS} FROM reports WHERE {where} "
                f"ORDER BY id {order} LIMIT ? OFFSET ?",
                (*args, limit, offset),
            )
            total = txn.select_one(f"SELECT COUNT(*) FROM reports WHERE {where}", tuple(args))
            return rows, int(total[0]) if total else 0

        return await self.db.run("list_reports", txn_fn)

    async def get_report(self, report_id: int) -> tuple[Any, ...] | None:
        return await self.db.run(
            "get_report",
            lambda txn: txn.select_one(
                f"SELECT {_REPORT_COLUMNS} FROM reports WHERE id = ?", (report_id,)
            ),
        )


_REPORT_COLUMNS = "id, reporter, room_id, event_id, target_user_id, reason, score, received_ts"
