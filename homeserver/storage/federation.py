"""SQL for federation: remote servers' keys, inbound transactions, the outbound queue and
its back-off, and outlier events."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from homeserver.storage.engine import Database, Txn, escape_like

JsonDict = dict[str, Any]


@dataclass(frozen=True)
class StoredKey:
    verify_key: str
    valid_until_ts: int
    expired_ts: int | None


@dataclass(frozen=True)
class OutboxItem:
    id: int
    kind: str
    room_id: str | None
    payload: str


@dataclass(frozen=True)
class DestinationState:
    failure_ts: int | None
    retry_interval_ms: int


class FederationStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    # Server keys

    async def get_server_keys(self, server_name: str) -> dict[str, StoredKey]:
        rows = await self.db.run(
            "get_server_keys",
            lambda txn: txn.select(
                "SELECT key_id, verify_key, valid_until_ts, expired_ts FROM server_keys "
                "WHERE server_name = ?",
                (server_name,),
            ),
        )
        return {r[0]: StoredKey(r[1], int(r[2]), r[3]) for r in rows}

    async def store_server_keys(
        self,
        server_name: str,
        keys: dict[str, StoredKey],
        response: JsonDict | None,
        now_ms: int,
    ) -> None:
        """Remember keys (never shortening what we knew) and the signed response they came
        in, for our notary endpoint."""

        def txn_fn(txn: Txn) -> None:
            for key_id, key in keys.items():
                row = txn.select_one(
                    "SELECT valid_until_ts FROM server_keys WHERE server_name = ? AND key_id = ?",
                    (server_name, key_id),
                )
                if row is None:
                    txn.execute(
                        "INSERT INTO server_keys (server_name, key_id, verify_key, valid_until_ts,"
                        " expired_ts, fetched_ts) VALUES (?, ?, ?, ?, ?, ?)",
                        (server_name, key_id, key.verify_key, key.valid_until_ts,
                         key.expired_ts, now_ms),
                    )  # fmt: skip
                elif int(row[0]) < key.valid_until_ts or key.expired_ts is not None:
                    txn.execute(
                        "UPDATE server_keys SET verify_key = ?, valid_until_ts = ?, "
                        "expired_ts = COALESCE(?, expired_ts), fetched_ts = ? "
                        "WHERE server_name = ? AND key_id = ?",
                        (key.verify_key, max(int(row[0]), key.valid_until_ts), key.expired_ts,
                         now_ms, server_name, key_id),
                    )  # fmt: skip
            if response is not None:
                valid_until = int(response.get("valid_until_ts", 0))
                row = txn.select_one(
                    "SELECT valid_until_ts FROM server_key_responses WHERE server_name = ?",
                    (server_name,),
                )
                if row is None:
                    txn.execute(
                        "INSERT INTO server_key_responses (server_name, valid_until_ts, json, "
                        "fetched_ts) VALUES (?, ?, ?, ?)",
                        (server_name, valid_until, json.dumps(response), now_ms),
                    )
                elif int(row[0]) <= valid_until:
                    txn.execute(
                        "UPDATE server_key_responses SET valid_until_ts = ?, json = ?, "
                        "fetched_ts = ? WHERE server_name = ?",
                        (valid_until, json.dumps(response), now_ms, server_name),
                    )

        await self.db.run("store_server_keys", txn_fn)

    async def get_key_response(self, server_name: str) -> JsonDict | None:
        row = await self.db.run(
            "get_key_response",
            lambda txn: txn.select_one(
                "SELECT json FROM server_key_responses WHERE server_name = ?", (server_name,)
            ),
        )
        return json.loads(row[0]) if row else None

    # Inbound transactions

    async def get_inbound_txn(self, origin: str, txn_id: str) -> JsonDict | None:
        row = await self.db.run(
            "get_inbound_txn",
            lambda txn: txn.select_one(
                "SELECT response_json FROM federation_inbound_txns WHERE origin = ? AND txn_id = ?",
                (origin, txn_id),
            ),
        )
        return json.loads(row[0]) if row else None

    async def store_inbound_txn(
        self, origin: str, txn_id: str, response: JsonDict, now_ms: int
    ) -> None:
        def txn_fn(txn: Txn) -> None:
            txn.execute(
                "INSERT INTO federation_inbound_txns (origin, txn_id, response_json, received_ts)"
                " VALUES (?, ?, ?, ?) ON CONFLICT (origin, txn_id) DO NOTHING",
                (origin, txn_id, json.dumps(response), now_ms),
            )

        await self.db.run("store_inbound_txn", txn_fn)

    async def purge_inbound_txns(self, before_ms: int) -> None:
        await self.db.run(
            "purge_inbound_txns",
            lambda txn: txn.execute(
                "DELETE FROM federation_inbound_txns WHERE received_ts < ?", (before_ms,)
            ),
        )

    # Outbound queue

    async def max_outbox_id(self) -> int:
        row = await self.db.run(
            "max_outbox_id", lambda txn: txn.select_one("SELECT MAX(id) FROM federation_outbox")
        )
        return int(row[0]) if row and row[0] is not None else 0

    async def enqueue(
        self, items: Sequence[tuple[int, str, str, str | None, str]], now_ms: int
    ) -> None:
        """(id, destination, kind, room_id, payload) rows, written together."""
        await self.db.run(
            "federation_enqueue",
            lambda txn: txn.execute_many(
                "INSERT INTO federation_outbox (id, destination, kind, room_id, payload, "
                "created_ts) VALUES (?, ?, ?, ?, ?, ?)",
                [(*item, now_ms) for item in items],
            ),
        )

    async def destinations_with_work(self) -> list[str]:
        rows = await self.db.run(
            "destinations_with_work",
            lambda txn: txn.select("SELECT DISTINCT destination FROM federation_outbox"),
        )
        return [r[0] for r in rows]

    async def peek_outbox(self, destination: str, kind: str, limit: int) -> list[OutboxItem]:
        rows = await self.db.run(
            "peek_outbox",
            lambda txn: txn.select(
                "SELECT id, kind, room_id, payload FROM federation_outbox "
                "WHERE destination = ? AND kind = ? ORDER BY id LIMIT ?",
                (destination, kind, limit),
            ),
        )
        return [OutboxItem(int(r[0]), r[1], r[2], r[3]) for r in rows]

    async def count_outbox(self, destination: str, kind: str) -> int:
        row = await self.db.run(
            "count_outbox",
            lambda txn: txn.select_one(
                "SELECT COUNT(*) FROM federation_outbox WHERE destination = ? AND kind = ?",
                (destination, kind),
            ),
        )
        return int(row[0]) if row else 0

    async def collapse_outbox(self, destination: str) -> int:
        """Keep only the newest queued PDU of each room for ``destination`` (the rest it
        can fetch with get_missing_events); returns how many were dropped."""

        def txn_fn(txn: Txn) -> int:
            txn.execute(
                "DELETE FROM federation_outbox WHERE destination = ? AND kind = 'pdu' "
                "AND id NOT IN (SELECT MAX(id) FROM federation_outbox "
                "WHERE destination = ? AND kind = 'pdu' GROUP BY room_id)",
                (destination, destination),
            )
            return txn.rowcount

        return await self.db.run("collapse_outbox", txn_fn)

    async def delete_outbox(self, ids: Iterable[int]) -> None:
        id_list = list(ids)
        if not id_list:
            return

        def txn_fn(txn: Txn) -> None:
            for start in range(0, len(id_list), 500):
                chunk = id_list[start : start + 500]
                txn.execute(
                    f"DELETE FROM federation_outbox WHERE id IN ({','.join('?' * len(chunk))})",
                    chunk,
                )

        await self.db.run("delete_outbox", txn_fn)

    async def get_destination(self, destination: str) -> DestinationState:
        row = await self.db.run(
            "get_destination",
            lambda txn: txn.select_one(
                "SELECT failure_ts, retry_interval_ms FROM federation_destinations "
                "WHERE destination = ?",
                (destination,),
            ),
        )
        if row is None:
            return DestinationState(None, 0)
        return DestinationState(row[0], int(row[1]))

    async def set_destination(
        self, destination: str, failure_ts: int | None, retry_interval_ms: int, now_ms: int
    ) -> None:
        def txn_fn(txn: Txn) -> None:
            txn.execute(
                "INSERT INTO federation_destinations (destination, failure_ts, retry_interval_ms,"
                " last_success_ts) VALUES (?, ?, ?, ?) ON CONFLICT (destination) DO UPDATE SET "
                "failure_ts = excluded.failure_ts, retry_interval_ms = excluded.retry_interval_ms,"
                " last_success_ts = COALESCE(excluded.last_success_ts, "
                "federation_destinations.last_success_ts)",
                (destination, failure_ts, retry_interval_ms,
                 now_ms if failure_ts is None else None),
            )  # fmt: skip

        await self.db.run("set_destination", txn_fn)

    async def list_destinations(self) -> list[tuple[Any, ...]]:
        """(destination, failure_ts, retry interval, last success) of every server we sent to."""
        rows = await self.db.run(
            "list_destinations",
            lambda txn: txn.select(
                "SELECT destination, failure_ts, retry_interval_ms, last_success_ts "
                "FROM federation_destinations ORDER BY destination"
            ),
        )
        return [tuple(r) for r in rows]

    async def rooms_shared_with(self, destination: str) -> list[tuple[str, int]]:
        """(room ID, latest stream position) of each room where a user of `destination` is
        joined: the rooms whose events go to it."""
        rows = await self.db.run(
            "rooms_shared_with",
            lambda txn: txn.select(
                "SELECT c.room_id, (SELECT MAX(e.stream_ordering) FROM events e "
                "WHERE e.room_id = c.room_id) FROM current_state c "
                "WHERE c.type = 'm.room.member' AND c.membership = 'join' "
                "AND c.state_key LIKE ? ESCAPE '\\' GROUP BY c.room_id ORDER BY c.room_id",
                ("%:" + escape_like(destination),),
            ),
        )
        return [(str(r[0]), int(r[1] or 0)) for r in rows]

    # Outliers

    async def store_outliers(self, events: Sequence[tuple[str, str, str, bool]]) -> None:
        """(event ID, room ID, JSON, rejected); events already known are left alone."""

        def txn_fn(txn: Txn) -> None:
            # A large room's state and auth chain is thousands of events: known ones are
            # found 500 at a time and the rest written as one batch.
            ids = list(dict.fromkeys(e[0] for e in events))
            known: set[str] = set()
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                known.update(
                    r[0]
                    for r in txn.select(
                        f"SELECT event_id FROM events WHERE event_id IN "
                        f"({','.join('?' * len(chunk))})",
                        chunk,
                    )
                )
            txn.execute_many(
                "INSERT INTO event_outliers (event_id, room_id, json, rejected) "
                "VALUES (?, ?, ?, ?) ON CONFLICT (event_id) DO NOTHING",
                [(event_id, room_id, json_text, 1 if rejected else 0)
                 for event_id, room_id, json_text, rejected in events if event_id not in known],
            )  # fmt: skip

        await self.db.run("store_outliers", txn_fn)

    # Invites from other servers

    async def store_invite_state(self, event_id: str, room_id: str, state: list[JsonDict]) -> None:
        await self.db.run(
            "store_invite_state",
            lambda txn: txn.execute(
                "INSERT INTO invite_room_state (event_id, room_id, json) VALUES (?, ?, ?) "
                "ON CONFLICT (event_id) DO NOTHING",
                (event_id, room_id, json.dumps(state)),
            ),
        )

    async def get_invite_state(self, event_id: str) -> list[JsonDict] | None:
        row = await self.db.run(
            "get_invite_state",
            lambda txn: txn.select_one(
                "SELECT json FROM invite_room_state WHERE event_id = ?", (event_id,)
            ),
        )
        return json.loads(row[0]) if row else None
