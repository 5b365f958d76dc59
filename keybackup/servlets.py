"""The /room_keys API: backup versions and the encrypted session keys in them."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from homeserver.errors import Codes, MatrixError, bad_json, missing_param, not_found
from homeserver.http.server import MatrixRequest, Router
from homeserver.http.servlet import client_paths, parse_json_object, query_string, require
from keybackup.rules import InvalidBackupData, check_auth_data, check_key_data
from keybackup.storage import BackupKey, BackupVersion, KeyBackupStore, NoBackup, WrongVersion

if TYPE_CHECKING:
    from homeserver.server import HomeServer

JsonDict = dict[str, Any]


def _no_backup() -> MatrixError:
    return not_found("No backup found")


def _parse_version(text: str | None) -> int:
    """Versions are opaque strings to clients; ours are decimal numbers."""
    if text is None:
        raise missing_param("version")
    if not (text.isascii() and text.isdigit()) or len(text) > 18 or text != str(int(text)):
        raise _no_backup()
    return int(text)


def _wrong_version(error: WrongVersion) -> MatrixError:
    return MatrixError(
        403, "M_WRONG_ROOM_KEYS_VERSION", "Wrong backup version.",
        current_version=str(error.current),
    )  # fmt: skip


def version_json(version: BackupVersion) -> JsonDict:
    return {
        "algorithm": version.algorithm,
        "auth_data": version.auth_data,
        "count": version.count,
        "etag": str(version.etag),
        "version": str(version.version),
    }


def register(hs: HomeServer, router: Router) -> None:
    store = KeyBackupStore(hs.db)

    async def create_version(request: MatrixRequest) -> tuple[int, Any]:
        requester = await hs.auth.get_user_by_req(request)
        body = parse_json_object(request)
        algorithm = require(body, "algorithm", str)
        auth_data = require(body, "auth_data", dict)
        try:
            check_auth_data(algorithm, auth_data)
        except InvalidBackupData as e:
            raise bad_json(str(e)) from None
        version = await store.create_version(requester.user_id, algorithm, auth_data)
        return 200, {"version": str(version)}

    async def get_current(request: MatrixRequest) -> tuple[int, Any]:
        requester = await hs.auth.get_user_by_req(request)
        version = await store.get_version(requester.user_id, None)
        if version is None:
            raise _no_backup()
        return 200, version_json(version)

    async def get_version(request: MatrixRequest, version: str) -> tuple[int, Any]:
        requester = await hs.auth.get_user_by_req(request)
        found = await store.get_version(requester.user_id, _parse_version(version))
        if found is None:
            raise _no_backup()
        return 200, version_json(found)

    async def put_version(request: MatrixRequest, version: str) -> tuple[int, Any]:
        requester = await hs.auth.get_user_by_req(request)
        number = _parse_version(version)
        body = parse_json_object(request)
        algorithm = require(body, "algorithm", str)
        auth_data = require(body, "auth_data", dict)
        found = await store.get_version(requester.user_id, number)
        if found is None:
            raise _no_backup()
        if "version" in body and body["version"] != version:
            raise MatrixError(400, Codes.INVALID_PARAM, "Version in body does not match the path")
        if algorithm != found.algorithm:
            raise MatrixError(400, Codes.INVALID_PARAM, "Algorithm does not match")
        try:
            check_auth_data(algorithm, auth_data)
        except InvalidBackupData as e:
            raise bad_json(str(e)) from None
        await store.update_auth_data(requester.user_id, number, auth_data)
        return 200, {}

    async def delete_version(request: MatrixRequest, version: str) -> tuple[int, Any]:
        requester = await hs.auth.get_user_by_req(request)
        if not await store.delete_version(requester.user_id, _parse_version(version)):
            raise _no_backup()
        return 200, {}

    def _key(algorithm: str, room_id: str, session_id: str, data: Any) -> BackupKey:
        quality = check_key_data(algorithm, data)
        # Only the encrypted blob is kept, exactly as sent.
        return BackupKey(room_id, session_id, quality, data["session_data"])

    def _keys_from(
        algorithm: str, body: JsonDict, room_id: str | None, session_id: str | None
    ) -> list[BackupKey]:
        """The keys in a PUT body of any of the three routes, validated."""
        try:
            if session_id is not None:
                assert room_id is not None
                return [_key(algorithm, room_id, session_id, body)]
            rooms = {room_id: body} if room_id is not None else require(body, "rooms", dict)
            keys = []
            for room, room_body in rooms.items():
                if not isinstance(room_body, dict) or not isinstance(
                    room_body.get("sessions"), dict
                ):
                    raise InvalidBackupData(f"rooms.{room}.sessions must be an object")
                for session, data in room_body["sessions"].items():
                    keys.append(_key(algorithm, room, session, data))
            return keys
        except InvalidBackupData as e:
            raise bad_json(str(e)) from None

    async def put_keys(
        request: MatrixRequest, room_id: str | None = None, session_id: str | None = None
    ) -> tuple[int, Any]:
        requester = await hs.auth.get_user_by_req(request)
        number = _parse_version(query_string(request, "version"))
        body = parse_json_object(request)
        version = await store.get_version(requester.user_id, number)
        if version is None:
            raise _no_backup()
        keys = _keys_from(version.algorithm, body, room_id, session_id)
        try:
            etag, count = await store.upload_keys(requester.user_id, number, keys)
        except NoBackup:
            raise _no_backup() from None
        except WrongVersion as e:
            raise _wrong_version(e) from None
        return 200, {"etag": str(etag), "count": count}

    async def get_keys(
        request: MatrixRequest, room_id: str | None = None, session_id: str | None = None
    ) -> tuple[int, Any]:
        requester = await hs.auth.get_user_by_req(request)
        number = _parse_version(query_string(request, "version"))
        if await store.get_version(requester.user_id, number) is None:
            raise _no_backup()
        keys = await store.get_keys(requester.user_id, number, room_id, session_id)
        if session_id is not None:
            if not keys:
                raise not_found("No key backed up for that session")
            return 200, keys[0].to_json()
        sessions: dict[str, JsonDict] = {}
        for key in keys:
            sessions.setdefault(key.room_id, {})[key.session_id] = key.to_json()
        if room_id is not None:
            return 200, {"sessions": sessions.get(room_id, {})}
        return 200, {"rooms": {room: {"sessions": s} for room, s in sessions.items()}}

    async def delete_keys(
        request: MatrixRequest, room_id: str | None = None, session_id: str | None = None
    ) -> tuple[int, Any]:
        requester = await hs.auth.get_user_by_req(request)
        number = _parse_version(query_string(request, "version"))
        try:
            etag, count = await store.delete_keys(requester.user_id, number, room_id, session_id)
        except NoBackup:
            raise _no_backup() from None
        except WrongVersion as e:
            raise _wrong_version(e) from None
        return 200, {"etag": str(etag), "count": count}

    add = router.add
    add("POST", client_paths("/room_keys/version"), create_version, "room_keys_version")
    add("GET", client_paths("/room_keys/version"), get_current, "room_keys_version")
    version_path = client_paths("/room_keys/version/{version}")
    add("GET", version_path, get_version, "room_keys_version")
    add("PUT", version_path, put_version, "room_keys_version")
    add("DELETE", version_path, delete_version, "room_keys_version")
    for suffix in ("", "/{room_id}", "/{room_id}/{session_id}"):
        path = client_paths("/room_keys/keys" + suffix)
        add("PUT", path, put_keys, "room_keys_keys")
        add("GET", path, get_keys, "room_keys_keys")
        add("DELETE", path, delete_keys, "room_keys_keys")
