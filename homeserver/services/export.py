"""A user's data, exported into one zip file that a person can read and a program can parse:
their account, profile and avatar, sessions with the addresses we keep, settings, every
room they were in with the events they could see there, their uploads, and their key
backup (still encrypted: the server cannot read it, and neither can the export)."""

from __future__ import annotations

import json
import os
import time
import zipfile
from typing import IO, TYPE_CHECKING, Any

from homeserver.errors import not_found
from keybackup.storage import KeyBackupStore

if TYPE_CHECKING:
    from homeserver.server import HomeServer

JsonDict = dict[str, Any]
FORMAT = "org.homeserver.export.v1"
EVENT_PAGE = 500
COPY_CHUNK = 1 << 16

README = """\
Your data on {server}, exported for {user_id} at {when} (UTC).

Everything is JSON (UTF-8). manifest.json lists the files and how many items each holds.

  account.json        your account: ID, creation time, e-mail addresses, linked identities
  profile.json        your display name, avatar and other profile fields
  profile/avatar      your avatar picture, when it was uploaded here
  devices.json        your sessions (devices), with each address (IP) and program (user
                      agent) we still keep for them and when each was last seen
  account_data.json   your settings: global ones, and per room (tags, read markers...)
  push.json           your notification rules and the push gateways you registered
  rooms/NNNN/room.json     a room you were in: its ID, name, your membership history
  rooms/NNNN/events.jsonl  the events of that room you could see, oldest first, one per
                      line, as a client receives them (encrypted ones stay encrypted)
  media/index.json    the files you uploaded (ID, type, name, size, time)
  media/<id>          each file
  key_backup.json     your key backup: its version and the room keys in it, still
                      encrypted with your recovery key (open them with that key)
"""


class _Writer:
    """Entries of the zip file, written as they are produced."""

    def __init__(self, archive: zipfile.ZipFile) -> None:
        self.archive = archive
        self.files: dict[str, int] = {}

    def json(self, name: str, value: Any, items: int = 1) -> None:
        self.archive.writestr(name, json.dumps(value, indent=2, ensure_ascii=False))
        self.files[name] = items

    def lines(self, name: str) -> IO[bytes]:
        self.files[name] = 0
        stream: IO[bytes] = self.archive.open(name, "w", force_zip64=True)
        return stream

    def copy(self, name: str, path: str) -> bool:
        if not os.path.exists(path):
            return False
        with open(path, "rb") as source, self.archive.open(name, "w", force_zip64=True) as out:
            while chunk := source.read(COPY_CHUNK):
                out.write(chunk)
        self.files[name] = 1
        return True


class UserExporter:
    def __init__(self, hs: HomeServer) -> None:
        self.hs = hs

    async def export(self, user_id: str, path: str) -> JsonDict:
        """Write the export to ``path`` (whole or not at all: a partial file is renamed
        only when complete) and return its manifest."""
        partial = path + ".partial"
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED, allowZip64=True) as archive:
            writer = _Writer(archive)
            await self._account(user_id, writer)
            await self._devices(user_id, writer)
            await self._settings(user_id, writer)
            await self._rooms(user_id, writer)
            await self._media(user_id, writer)
            await self._key_backup(user_id, writer)
            when = self.hs.clock.time_msec()
            manifest = {
                "format": FORMAT, "user_id": user_id, "server": self.hs.config.server_name,
                "created_ts": when, "files": dict(writer.files),
            }  # fmt: skip
            writer.json("manifest.json", manifest)
            stamp = _utc(when)
            archive.writestr(
                "README.txt",
                README.format(server=self.hs.config.server_name, user_id=user_id, when=stamp),
            )
        os.replace(partial, path)
        return manifest

    async def _account(self, user_id: str, writer: _Writer) -> None:
        user = await self.hs.stores.users.get_user(user_id)
        writer.json("account.json", {
            "user_id": user_id,
            "created_ts": user.created_ts if user else None,
            "threepids": await self.hs.threepids.list(user_id),
            "external_ids": [
                {"auth_provider": p, "external_id": e}
                for p, e in await self.hs.stores.users.get_external_ids(user_id)
            ],
        })  # fmt: skip
        profile = await self.hs.stores.profiles.get_profile(user_id)
        writer.json("profile.json", profile)
        avatar = profile.get("avatar_url")
        prefix = f"mxc://{self.hs.config.server_name}/"
        if isinstance(avatar, str) and avatar.startswith(prefix):
            writer.copy("profile/avatar", self.hs.media._file(avatar[len(prefix) :]))

    async def _devices(self, user_id: str, writer: _Writer) -> None:
        sightings: dict[str, list[JsonDict]] = {}
        rows = list(await self.hs.stores.devices.get_client_ips(user_id))
        # Sightings still buffered in memory (written in batches) count too.
        rows += [(d, *seen) for d, seen in self.hs.client_ips.pending_for_user(user_id).items()]
        for device_id, ip, user_agent, last_seen in rows:
            entries = sightings.setdefault(device_id, [])
            entry = {"ip": ip, "user_agent": user_agent, "last_seen_ts": last_seen}
            same = next(
                (e for e in entries if e["ip"] == ip and e["user_agent"] == user_agent), None
            )
            if same is None:
                entries.append(entry)
            else:
                same["last_seen_ts"] = max(same["last_seen_ts"], last_seen)
        devices = [
            {"device_id": d.device_id, "display_name": d.display_name,
             "last_seen_ts": d.last_seen_ts, "seen_from": sightings.get(d.device_id, [])}
            for d in await self.hs.devices.get_devices(user_id)
        ]  # fmt: skip
        writer.json("devices.json", devices, len(devices))

    async def _settings(self, user_id: str, writer: _Writer) -> None:
        rows = await self.hs.stores.sync.get_account_data_since(
            user_id, 0, self.hs.account_data.stream.current
        )
        account_data: JsonDict = {"global": {}, "rooms": {}}
        for room_id, data_type, content in rows:
            if room_id:
                account_data["rooms"].setdefault(room_id, {})[data_type] = content
            else:
                account_data["global"][data_type] = content
        writer.json("account_data.json", account_data, len(rows))
        pushers = [p for _, p in await self.hs.stores.push.get_pushers(user_id)]
        writer.json("push.json", {"rules": await self.hs.push.ruleset(user_id), "pushers": pushers})

    async def _rooms(self, user_id: str, writer: _Writer) -> None:
        events = self.hs.stores.events
        for number, room_id in enumerate(await events.rooms_ever_in(user_id), start=1):
            folder = f"rooms/{number:04d}"
            history = await events.get_membership_history(user_id, room_id)
            state = await self.hs.room_events.current_state_events(room_id)
            name_event = state.get(("m.room.name", ""))
            writer.json(f"{folder}/room.json", {
                "room_id": room_id,
                "name": (name_event.data.get("content") or {}).get("name") if name_event else None,
                "memberships": [{"stream": s, "membership": m} for s, m in history],
            })  # fmt: skip
            name = f"{folder}/events.jsonl"
            stream = writer.lines(name)
            try:
                writer.files[name] = await self._room_events(user_id, room_id, stream)
            finally:
                stream.close()

    async def _room_events(self, user_id: str, room_id: str, out: IO[bytes]) -> int:
        """The room's events the user could see, oldest first, in pages (never the whole
        room in memory)."""
        written = 0
        after: int | None = None
        access = self.hs.room_access
        while True:
            rows = await self.hs.stores.events.get_room_event_ids(
                room_id, after, None, False, EVENT_PAGE
            )
            if not rows:
                return written
            after = rows[-1][1]
            loaded = await self.hs.room_events.get_events(e for e, _ in rows)
            page = [loaded[e] for e, _ in rows if e in loaded]
            visible = await access.filter_visible(user_id, page)
            for data in await access.serialize_many(visible):
                out.write(json.dumps(data, ensure_ascii=False).encode() + b"\n")
            written += len(visible)
            if len(rows) < EVENT_PAGE:
                return written

    async def _media(self, user_id: str, writer: _Writer) -> None:
        index = []
        media = self.hs.media
        for media_id in await media.store.user_media_ids(user_id):
            info = await media.get_info(media_id)
            if info is None:
                continue
            stored = writer.copy(f"media/{media_id}", media._file(media_id))
            index.append({
                "media_id": media_id, "mxc": f"mxc://{self.hs.config.server_name}/{media_id}",
                "content_type": info.content_type, "upload_name": info.upload_name,
                "size": info.size, "created_ts": info.created_ts, "file_included": stored,
            })  # fmt: skip
        writer.json("media/index.json", index, len(index))

    async def _key_backup(self, user_id: str, writer: _Writer) -> None:
        store = KeyBackupStore(self.hs.db)
        version = await store.get_version(user_id, None)
        if version is None:
            writer.json("key_backup.json", {"version": None, "rooms": {}}, 0)
            return
        rooms: JsonDict = {}
        keys = await store.get_keys(user_id, version.version, None, None)
        for key in keys:
            entry = key.to_json()
            raw = entry["session_data"]
            entry["session_data"] = json.loads(bytes(raw)) if not isinstance(raw, dict) else raw
            rooms.setdefault(key.room_id, {}).setdefault("sessions", {})[key.session_id] = entry
        writer.json("key_backup.json", {
            "version": str(version.version), "algorithm": version.algorithm,
            "auth_data": version.auth_data, "count": version.count, "rooms": rooms,
        }, len(keys))  # fmt: skip


def _utc(ms: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ms / 1000))


EXPORT_ACTION = "export_user"


class ExportService:
    """Exports as background jobs (persisted, resumed after a restart), each downloadable
    only by whoever asked for it, and deleted after ``privacy.export_retention``."""

    def __init__(self, hs: HomeServer) -> None:
        self.hs = hs
        self.exporter = UserExporter(hs)
        self.directory = hs.config.privacy.export_path
        hs.tasks.register(EXPORT_ACTION, self._run)

    def start(self) -> None:
        self.hs.clock.looping_call(self.purge_expired, 3_600_000)

    def path(self, export_id: str) -> str:
        return os.path.join(self.directory, f"{export_id}.zip")

    async def request(self, user_id: str, requested_by: str) -> str:
        params = {"user_id": user_id, "requested_by": requested_by}
        return await self.hs.tasks.schedule(EXPORT_ACTION, user_id, params)

    async def _run(self, task: JsonDict) -> JsonDict:
        path = self.path(str(task["id"]))
        manifest = await self.exporter.export(str(task["params"]["user_id"]), path)
        return {"size": os.path.getsize(path), "files": len(manifest["files"])}

    async def status(self, export_id: str, user_id: str, requester: str) -> JsonDict:
        """The export's status, for the user it is of and the one who asked for it."""
        task = await self.hs.tasks.get(export_id, EXPORT_ACTION)
        params = task.get("params") or {}
        if params.get("user_id") != user_id or params.get("requested_by") != requester:
            raise not_found("No such export")
        answer: JsonDict = {"export_id": export_id, "status": task["status"]}
        if task.get("error"):
            answer["error"] = task["error"]
        if task["status"] == "complete":
            if not os.path.exists(self.path(export_id)):
                answer["status"] = "expired"
            else:
                answer["size"] = (task.get("result") or {}).get("size")
        return answer

    async def finished_file(self, export_id: str, user_id: str, requester: str) -> tuple[str, str]:
        """(path, download name) of a complete export, for those who may have it."""
        answer = await self.status(export_id, user_id, requester)
        if answer["status"] != "complete":
            raise not_found(f"The export is {answer['status']}")
        return self.path(export_id), f"export-{export_id}.zip"

    def purge_expired(self) -> None:
        cutoff = time.time() - self.hs.config.privacy.export_retention_ms / 1000
        if not os.path.isdir(self.directory):
            return
        for name in os.listdir(self.directory):
            path = os.path.join(self.directory, name)
            if os.path.isfile(path) and os.path.getmtime(path) < cutoff:
                os.remove(path)
