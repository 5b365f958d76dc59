"""SQL for erasing a user: every row that holds their data, and the content of what they
sent. Event skeletons (IDs, senders, graph edges, state maps) stay, as rooms need them."""

from __future__ import annotations

from dataclasses import dataclass

from homeserver.storage.engine import Database, Txn, escape_like

# (table, column naming the user) of every row that is the user's own data.
USER_ROWS = (
    ("access_tokens", "user_id"), ("refresh_tokens", "user_id"), ("login_tokens", "user_id"),
    ("openid_tokens", "user_id"), ("devices", "user_id"), ("client_ips", "user_id"),
    ("dehydrated_devices", "user_id"), ("device_keys", "user_id"),
    ("one_time_keys", "user_id"), ("fallback_keys", "user_id"),
    ("cross_signing_keys", "user_id"), ("e2e_signatures", "target_user_id"),
    ("e2e_signatures", "signer_user_id"), ("device_list_changes", "user_id"),
    ("to_device_messages", "user_id"), ("to_device_txns", "user_id"),
    ("backup_keys", "user_id"), ("backup_versions", "user_id"),
    ("account_data", "user_id"), ("push_rules", "user_id"), ("pushers", "user_id"),
    ("event_push_actions", "user_id"), ("user_filters", "user_id"), ("receipts", "user_id"),
    ("reports", "reporter"), ("event_transactions", "user_id"),
    ("profiles", "user_id"), ("user_threepids", "user_id"), ("user_external_ids", "user_id"),
    ("ratelimit_overrides", "user_id"), ("cross_signing_replacement", "user_id"),
    ("server_notice_rooms", "user_id"), ("sliding_sync_rooms", None),
    ("sliding_sync_positions", None), ("sliding_sync_connections", "user_id"),
)  # fmt: skip


@dataclass(frozen=True)
class SentEvent:
    event_id: str
    room_id: str
    event_type: str
    state_key: str | None
    json: str


class ErasureStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def delete_user_rows(self, user_id: str, addresses: list[str]) -> None:
        """Every row of the user's own data, in one transaction; ``addresses`` are their
        e-mail addresses (validation sessions are kept by address)."""

        def txn_fn(txn: Txn) -> None:
            keys = [
                r[0]
                for r in txn.select(
                    "SELECT connection_key FROM sliding_sync_connections WHERE user_id = ?",
                    (user_id,),
                )
            ]
            for table, column in USER_ROWS:
                if column is None:
                    txn.execute_many(
                        f"DELETE FROM {table} WHERE connection_key = ?", [(k,) for k in keys]
                    )
                else:
                    txn.execute(f"DELETE FROM {table} WHERE {column} = ?", (user_id,))
            txn.execute_many(
                "DELETE FROM threepid_validations WHERE address = ?", [(a,) for a in addresses]
            )
            # Notes to other servers about them not sent yet (typing, receipts, presence,
            # to-device); their queued events go out as stored, that is, pruned.
            txn.execute(
                "DELETE FROM federation_outbox WHERE kind = 'edu' AND payload LIKE ? ESCAPE '\\'",
                (f'%"{escape_like(user_id)}"%',),
            )
            # Messages the user sent that their recipients have not fetched yet.
            txn.execute(
                "DELETE FROM to_device_messages WHERE message_json LIKE ? ESCAPE '\\'",
                (f'%"sender": "{escape_like(user_id)}"%',),
            )

        await self.db.run("erase_user_rows", txn_fn)

    async def events_of(self, user_id: str, room_id: str) -> list[SentEvent]:
        """The events the user sent in the room, and the membership events about them
        (an invite copies the invitee's name and avatar into its content)."""
        rows = await self.db.run(
            "events_of_user",
            lambda txn: txn.select(
                "SELECT event_id, room_id, type, state_key, json FROM events "
                "WHERE room_id = ? AND (sender = ? OR (type = 'm.room.member' AND state_key = ?))",
                (room_id, user_id, user_id),
            ),
        )
        return [SentEvent(r[0], r[1], r[2], r[3], r[4]) for r in rows]

    async def redacted_before(self, before_ts: int, limit: int) -> list[SentEvent]:
        """Events redacted before ``before_ts`` whose stored content was not pruned yet."""
        rows = await self.db.run(
            "redacted_before",
            lambda txn: txn.select(
                "SELECT DISTINCT e.event_id, e.room_id, e.type, e.state_key, e.json "
                "FROM redactions r JOIN events re ON re.event_id = r.redacted_by "
                "JOIN events e ON e.event_id = r.event_id "
                "WHERE r.pruned = 0 AND re.origin_server_ts < ? LIMIT ?",
                (before_ts, limit),
            ),
        )
        return [SentEvent(r[0], r[1], r[2], r[3], r[4]) for r in rows]

    async def mark_redactions_pruned(self, event_ids: list[str]) -> None:
        await self.db.run(
            "mark_redactions_pruned",
            lambda txn: txn.execute_many(
                "UPDATE redactions SET pruned = 1 WHERE event_id = ?", [(e,) for e in event_ids]
            ),
        )

    async def replace_event_json(self, pruned: dict[str, str]) -> None:
        """Store events as pruned (their content gone); drop them from search and from the
        relations index (a pruned event relates to nothing any more)."""

        def txn_fn(txn: Txn) -> None:
            txn.execute_many(
                "UPDATE events SET json = ? WHERE event_id = ?",
                [(text, event_id) for event_id, text in pruned.items()],
            )
            ids = [(e,) for e in pruned]
            txn.execute_many("DELETE FROM event_search WHERE event_id = ?", ids)
            txn.execute_many("DELETE FROM event_relations WHERE event_id = ?", ids)
            if txn.engine.name == "sqlite":
                # The full-text index keeps deleted words in its segments until merged.
                txn.execute("INSERT INTO event_search (event_search) VALUES ('optimize')")

        await self.db.run("prune_events", txn_fn)
