"""SQL for media metadata and thumbnails (the bytes themselves are files)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from homeserver.storage.engine import Database, Txn


@dataclass(frozen=True)
class MediaInfo:
    media_id: str
    user_id: str
    content_type: str | None
    upload_name: str | None
    size: int | None
    created_ts: int
    uploaded_ts: int | None
    expires_ts: int | None = None


class MediaStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def get_info(self, media_id: str) -> MediaInfo | None:
        row = await self.db.run(
            "get_media",
            lambda txn: txn.select_one(
                "SELECT media_id, user_id, content_type, upload_name, size, created_ts, "
                "uploaded_ts, expires_ts FROM media WHERE media_id = ?",
                (media_id,),
            ),
        )
        return MediaInfo(*row) if row else None

    async def used_bytes(self, user_id: str) -> int:
        row = await self.db.run(
            "media_usage",
            lambda txn: txn.select_one(
                "SELECT COALESCE(SUM(size), 0) FROM media WHERE user_id = ?", (user_id,)
            ),
        )
        return int(row[0]) if row else 0

    async def reserve(self, media_id: str, user_id: str, now_ms: int, expires_ms: int) -> None:
        await self.db.run(
            "reserve_media",
            lambda txn: txn.execute(
                "INSERT INTO media (media_id, user_id, created_ts, expires_ts) VALUES (?, ?, ?, ?)",
                (media_id, user_id, now_ms, expires_ms),
            ),
        )

    async def store(
        self,
        media_id: str,
        user_id: str,
        content_type: str | None,
        upload_name: str | None,
        size: int,
        now_ms: int,
    ) -> None:
        def txn_fn(txn: Txn) -> None:
            txn.execute(
                "INSERT INTO media (media_id, user_id, content_type, upload_name, size, "
                "created_ts, uploaded_ts) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (media_id) "
                "DO UPDATE SET content_type = excluded.content_type, "
                "upload_name = excluded.upload_name, size = excluded.size, "
                "uploaded_ts = excluded.uploaded_ts, expires_ts = NULL",
                (media_id, user_id, content_type, upload_name, size, now_ms, now_ms),
            )

        await self.db.run("store_media", txn_fn)

    async def complete_upload(
        self,
        media_id: str,
        user_id: str,
        content_type: str | None,
        upload_name: str | None,
        size: int,
        now_ms: int,
    ) -> bool:
        """Fill in a reserved (created, not yet uploaded) media ID; False if it is taken."""

        def txn_fn(txn: Txn) -> bool:
            txn.execute(
                "UPDATE media SET content_type = ?, upload_name = ?, size = ?, uploaded_ts = ?, "
                "expires_ts = NULL WHERE media_id = ? AND user_id = ? AND uploaded_ts IS NULL",
                (content_type, upload_name, size, now_ms, media_id, user_id),
            )
            return txn.rowcount == 1

        return await self.db.run("complete_media_upload", txn_fn)

    async def get_thumbnail_type(
        self, media_id: str, width: int, height: int, method: str
    ) -> str | None:
        row = await self.db.run(
            "get_thumbnail",
            lambda txn: txn.select_one(
                "SELECT content_type FROM media_thumbnails WHERE media_id = ? AND width = ? "
                "AND height = ? AND method = ?",
                (media_id, width, height, method),
            ),
        )
        return row[0] if row else None

    async def store_thumbnail(
        self, media_id: str, width: int, height: int, method: str, content_type: str, size: int
    ) -> None:
        await self.db.run(
            "store_thumbnail",
            lambda txn: txn.execute(
                "INSERT INTO media_thumbnails (media_id, width, height, method, content_type, "
                "size) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (media_id, width, height, method) "
                "DO NOTHING",
                (media_id, width, height, method, content_type, size),
            ),
        )

    async def user_media_ids(self, user_id: str) -> list[str]:
        rows = await self.db.run(
            "get_user_media",
            lambda txn: txn.select("SELECT media_id FROM media WHERE user_id = ?", (user_id,)),
        )
        return [r[0] for r in rows]

    async def thumbnails_of(self, media_id: str) -> list[tuple[int, int, str]]:
        rows = await self.db.run(
            "get_media_thumbnails",
            lambda txn: txn.select(
                "SELECT width, height, method FROM media_thumbnails WHERE media_id = ?",
                (media_id,),
            ),
        )
        return [(int(r[0]), int(r[1]), r[2]) for r in rows]

    async def delete(self, media_id: str) -> None:
        def txn_fn(txn: Txn) -> None:
            txn.execute("DELETE FROM media_thumbnails WHERE media_id = ?", (media_id,))
            txn.execute("DELETE FROM media WHERE media_id = ?", (media_id,))

        await self.db.run("delete_media", txn_fn)

    # Other servers' media

    async def get_remote(self, server_name: str, media_id: str) -> MediaInfo | None:
        row = await self.db.run(
            "get_remote_media",
            lambda txn: txn.select_one(
                "SELECT local_id, content_type, upload_name, size, fetched_ts "
                "FROM remote_media WHERE server_name = ? AND media_id = ?",
                (server_name, media_id),
            ),
        )
        if row is None:
            return None
        return MediaInfo(row[0], "", row[1], row[2], int(row[3]), int(row[4]), int(row[4]))

    async def store_remote(
        self, server_name: str, media_id: str, local_id: str, content_type: str | None,
        upload_name: str | None, size: int, now_ms: int,
    ) -> None:  # fmt: skip
        await self.db.run(
            "store_remote_media",
            lambda txn: txn.execute(
                "INSERT INTO remote_media (server_name, media_id, local_id, content_type, "
                "upload_name, size, fetched_ts) VALUES (?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (server_name, media_id) DO NOTHING",
                (server_name, media_id, local_id, content_type, upload_name, size, now_ms),
            ),
        )

    # URL previews

    async def get_url_preview(self, url: str, fetched_after: int) -> dict[str, Any] | None:
        row = await self.db.run(
            "get_url_preview",
            lambda txn: txn.select_one(
                "SELECT preview_json FROM url_previews WHERE url = ? AND fetched_ts > ?",
                (url, fetched_after),
            ),
        )
        return json.loads(row[0]) if row else None

    async def store_url_preview(self, url: str, preview: dict[str, Any], now_ms: int) -> None:
        def txn_fn(txn: Txn) -> None:
            txn.execute("DELETE FROM url_previews WHERE url = ?", (url,))
            txn.execute(
                "INSERT INTO url_previews (url, preview_json, fetched_ts) VALUES (?, ?, ?)",
                (url, json.dumps(preview), now_ms),
            )

        await self.db.run("store_url_preview", txn_fn)

    # Moderation

    async def quarantine(self, media_ids: list[str], by: str | None) -> int:
        """Quarantine (or, with ``by`` None, release) local media; protected media is left
        alone. Returns how many changed."""

        def txn_fn(txn: Txn) -> int:
            changed = 0
            for media_id in media_ids:
                txn.execute(
                    "UPDATE media SET quarantined_by = ? WHERE media_id = ? "
                    "AND safe_from_quarantine = 0",
                    (by, media_id),
                )
                changed += max(txn.rowcount, 0)
            return changed

        return await self.db.run("quarantine_media", txn_fn)

    async def quarantine_remote(self, server_name: str, media_id: str, by: str | None) -> int:
        def txn_fn(txn: Txn) -> int:
            txn.execute(
                "UPDATE remote_media SET quarantined_by = ? WHERE server_name = ? AND media_id = ?",
                (by, server_name, media_id),
            )
            return max(txn.rowcount, 0)

        return await self.db.run("quarantine_remote_media", txn_fn)

    async def set_protected(self, media_id: str, protected: bool) -> None:
        await self.db.run(
            "protect_media",
            lambda txn: txn.execute(
                "UPDATE media SET safe_from_quarantine = ? WHERE media_id = ?",
                (1 if protected else 0, media_id),
            ),
        )

    async def quarantined_by(self, media_id: str) -> tuple[str | None, bool]:
        row = await self.db.run(
            "media_quarantine_state",
            lambda txn: txn.select_one(
                "SELECT quarantined_by, safe_from_quarantine FROM media WHERE media_id = ?",
                (media_id,),
            ),
        )
        return (row[0], bool(row[1])) if row else (None, False)

    async def remote_quarantined(self, server_name: str, media_id: str) -> bool:
        return await self.remote_quarantined_by(server_name, media_id) is not None

    async def remote_quarantined_by(self, server_name: str, media_id: str) -> str | None:
        row = await self.db.run(
            "remote_media_quarantined",
            lambda txn: txn.select_one(
                "SELECT quarantined_by FROM remote_media WHERE server_name = ? AND media_id = ?",
                (server_name, media_id),
            ),
        )
        return str(row[0]) if row and row[0] else None

    async def old_media(self, before_ts: int, size_gt: int) -> list[str]:
        rows = await self.db.run(
            "old_media",
            lambda txn: txn.select(
                "SELECT media_id FROM media WHERE created_ts < ? AND COALESCE(size, 0) > ? "
                "AND safe_from_quarantine = 0",
                (before_ts, size_gt),
            ),
        )
        return [r[0] for r in rows]

    async def old_remote_media(self, before_ts: int) -> list[tuple[str, str, str]]:
        rows = await self.db.run(
            "old_remote_media",
            lambda txn: txn.select(
                "SELECT server_name, media_id, local_id FROM remote_media WHERE fetched_ts < ?",
                (before_ts,),
            ),
        )
        return [(r[0], r[1], r[2]) for r in rows]

    async def delete_remote(self, server_name: str, media_id: str) -> None:
        await self.db.run(
            "delete_remote_media",
            lambda txn: txn.execute(
                "DELETE FROM remote_media WHERE server_name = ? AND media_id = ?",
                (server_name, media_id),
            ),
        )
