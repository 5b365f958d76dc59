"""Server-side key backup over HTTP (/room_keys): versions, writes only to the current
version, count and etag, the keep-the-better-key rule on every route, uploads serialised in
the database, shape checks that keep plaintext session keys out, reads and deletes."""

from __future__ import annotations

import os
import sqlite3
import threading
from typing import Any
from urllib.parse import quote

import pytest

from keybackup.client_crypto import backup_public_key, encrypt_for_backup
from tests.harness import PG_ARGS, Client, ServerProcess, new_user

ALGORITHM = "m.megolm_backup.v1.curve25519-aes-sha2"
ROUTES = ["bulk", "room", "session"]
ROOM = "!backup-room:example.org"
OTHER_ROOM = "!other-room:example.org"
# Real Megolm session IDs are base64 and contain "/" and "+".
SESSION = "sess/ion+AbC1"
OTHER_SESSION = "other+session/2"

JsonDict = dict[str, Any]


# Helpers


def new_public_key() -> str:
    return backup_public_key(os.urandom(32))


PUBLIC_KEY = new_public_key()


def create_backup(
    user: Client, auth_data: JsonDict | None = None, algorithm: str = ALGORITHM
) -> str:
    body = {"algorithm": algorithm, "auth_data": auth_data or {"public_key": PUBLIC_KEY}}
    resp = user.post("room_keys/version", body)
    assert resp.status == 200, resp
    assert isinstance(resp.body["version"], str)
    return str(resp.body["version"])


def version_info(user: Client, version: str | None = None) -> JsonDict:
    resp = user.get("room_keys/version" + (f"/{version}" if version else ""))
    assert resp.status == 200, resp
    body: JsonDict = resp.body
    return body


def key_data(verified: bool = False, fmi: int = 0, forwarded: int = 0, tag: str = "") -> JsonDict:
    """A KeyBackupData with a real, distinct encrypted blob."""
    return {
        "first_message_index": fmi,
        "forwarded_count": forwarded,
        "is_verified": verified,
        "session_data": encrypt_for_backup(PUBLIC_KEY, {"tag": tag or os.urandom(4).hex()}),
    }


def keys_path(room_id: str | None = None, session_id: str | None = None) -> str:
    path = "room_keys/keys"
    if room_id is not None:
        path += "/" + quote(room_id, safe="")
    if session_id is not None:
        path += "/" + quote(session_id, safe="")
    return path


def put_key(
    user: Client, route: str, version: str, room_id: str, session_id: str, data: Any
) -> Any:
    """Upload one session's key through ``route``; returns the response."""
    params = {"version": version}
    if route == "bulk":
        body = {"rooms": {room_id: {"sessions": {session_id: data}}}}
        return user.put(keys_path(), body, params=params)
    if route == "room":
        return user.put(keys_path(room_id), {"sessions": {session_id: data}}, params=params)
    return user.put(keys_path(room_id, session_id), data, params=params)


def upload_ok(
    user: Client, route: str, version: str, room_id: str, session_id: str, data: Any
) -> JsonDict:
    resp = put_key(user, route, version, room_id, session_id, data)
    assert resp.status == 200, resp
    assert set(resp.body) == {"etag", "count"}, resp
    assert isinstance(resp.body["etag"], str) and isinstance(resp.body["count"], int)
    body: JsonDict = resp.body
    return body


def get_session(user: Client, version: str, room_id: str, session_id: str) -> JsonDict:
    resp = user.get(keys_path(room_id, session_id), params={"version": version})
    assert resp.status == 200, resp
    body: JsonDict = resp.body
    return body


def all_keys(user: Client, version: str) -> JsonDict:
    resp = user.get(keys_path(), params={"version": version})
    assert resp.status == 200, resp
    body: JsonDict = resp.body
    return body


def assert_error(resp: Any, status: int, errcode: str) -> None:
    assert resp.status == status, resp
    assert resp.body["errcode"] == errcode, resp


def database_rows(server: ServerProcess) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table of the server's database."""
    tables: dict[str, list[tuple[Any, ...]]] = {}
    if server.db_kind == "sqlite":
        conn = sqlite3.connect(server.sqlite_path)
        try:
            names = [
                r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
            ]
            for name in names:
                tables[name] = list(conn.execute(f'SELECT * FROM "{name}"'))
        finally:
            conn.close()
        return tables
    import psycopg2

    pg = psycopg2.connect(**{**PG_ARGS, "dbname": server.pg_database})
    try:
        cur = pg.cursor()
        cur.execute(
            "SELECT table_schema, table_name FROM information_schema.tables "
            "WHERE table_type = 'BASE TABLE' "
            "AND table_schema NOT IN ('pg_catalog', 'information_schema')"
        )
        for schema, name in cur.fetchall():
            cur.execute(f'SELECT * FROM "{schema}"."{name}"')
            tables[name] = list(cur.fetchall())
    finally:
        pg.close()
    return tables


def backup_key_rows(server: ServerProcess, user_id: str | None) -> list[tuple[Any, ...]]:
    return [row for row in database_rows(server)["backup_keys"] if user_id in row]


# Versions


def test_versions_count_up_and_are_never_reused(alice: Client) -> None:
    first_key, second_key = {"public_key": new_public_key()}, {"public_key": new_public_key()}
    assert create_backup(alice, first_key) == "1"
    assert create_backup(alice, second_key) == "2"

    latest = version_info(alice)
    assert latest == {
        "algorithm": ALGORITHM,
        "auth_data": second_key,
        "count": 0,
        "etag": latest["etag"],
        "version": "2",
    }
    assert isinstance(latest["etag"], str)
    assert version_info(alice, "1")["auth_data"] == first_key
    assert version_info(alice, "1")["version"] == "1"
    assert version_info(alice, "2") == latest

    resp = alice.delete("room_keys/version/2")
    assert resp.status == 200, resp
    assert resp.body == {}
    assert_error(alice.get("room_keys/version/2"), 404, "M_NOT_FOUND")
    resp = alice.put("room_keys/version/2", {"algorithm": ALGORITHM, "auth_data": second_key})
    assert_error(resp, 404, "M_NOT_FOUND")
    assert version_info(alice)["version"] == "1"  # the latest that still exists

    assert create_backup(alice) == "3"  # not 2 again
    assert version_info(alice)["version"] == "3"
    assert alice.delete("room_keys/version/3").status == 200
    assert alice.delete("room_keys/version/1").status == 200
    assert_error(alice.get("room_keys/version"), 404, "M_NOT_FOUND")
    assert create_backup(alice) == "4"


def test_concurrent_creates_get_distinct_versions(server: ServerProcess) -> None:
    user = new_user(server)
    count = 8
    barrier = threading.Barrier(count)
    results: list[Any] = []

    def create() -> None:
        client = Client(server, user.token)
        barrier.wait()
        body = {"algorithm": ALGORITHM, "auth_data": {"public_key": new_public_key()}}
        results.append(client.post("room_keys/version", body))

    threads = [threading.Thread(target=create) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert all(resp.status == 200 for resp in results), results
    assert sorted(int(resp.body["version"]) for resp in results) == list(range(1, count + 1))
    assert version_info(user)["version"] == str(count)


def test_no_backup_is_404(alice: Client) -> None:
    assert_error(alice.get("room_keys/version"), 404, "M_NOT_FOUND")
    for version in ("1", "2", "999999", "abc", "-1"):
        assert_error(alice.get(f"room_keys/version/{version}"), 404, "M_NOT_FOUND")
        assert_error(
            alice.put(
                f"room_keys/version/{version}",
                {"algorithm": ALGORITHM, "auth_data": {"public_key": PUBLIC_KEY}},
            ),
            404,
            "M_NOT_FOUND",
        )
        assert_error(alice.delete(f"room_keys/version/{version}"), 404, "M_NOT_FOUND")


def test_versions_belong_to_their_user(alice: Client, bob: Client) -> None:
    create_backup(alice)
    alice_two = create_backup(alice)
    upload_ok(alice, "bulk", alice_two, ROOM, SESSION, key_data())

    assert_error(bob.get("room_keys/version"), 404, "M_NOT_FOUND")
    assert_error(bob.get(f"room_keys/version/{alice_two}"), 404, "M_NOT_FOUND")
    assert_error(bob.get(keys_path(), params={"version": alice_two}), 404, "M_NOT_FOUND")
    assert_error(bob.delete(f"room_keys/version/{alice_two}"), 404, "M_NOT_FOUND")
    assert create_backup(bob) == "1"  # numbered per user
    assert all_keys(bob, "1") == {"rooms": {}}  # none of alice's keys
    assert version_info(alice)["version"] == alice_two
    assert version_info(alice)["count"] == 1


def test_update_changes_only_auth_data(alice: Client) -> None:
    version = create_backup(alice)
    upload_ok(alice, "bulk", version, ROOM, SESSION, key_data())
    upload_ok(alice, "bulk", version, ROOM, OTHER_SESSION, key_data())
    before = version_info(alice, version)
    keys_before = all_keys(alice, version)

    new_auth = {
        "public_key": new_public_key(),
        "signatures": {alice.user_id: {"ed25519:DEVICE": "c2lnbmF0dXJl"}},
    }
    resp = alice.put(
        f"room_keys/version/{version}", {"algorithm": ALGORITHM, "auth_data": new_auth}
    )
    assert resp.status == 200, resp
    assert resp.body == {}
    assert version_info(alice, version) == {**before, "auth_data": new_auth}
    assert all_keys(alice, version) == keys_before

    # The body's version may be given when it matches the path.
    newer_auth = {"public_key": new_public_key()}
    resp = alice.put(
        f"room_keys/version/{version}",
        {"algorithm": ALGORITHM, "auth_data": newer_auth, "version": version},
    )
    assert resp.status == 200, resp
    assert version_info(alice, version) == {**before, "auth_data": newer_auth}


def test_update_refusals(alice: Client) -> None:
    version = create_backup(alice)
    other = create_backup(alice)
    before = version_info(alice, version)
    path = f"room_keys/version/{version}"
    new_auth = {"public_key": new_public_key()}

    resp = alice.put(path, {"algorithm": "org.example.other", "auth_data": new_auth})
    assert_error(resp, 400, "M_INVALID_PARAM")
    resp = alice.put(path, {"algorithm": ALGORITHM, "auth_data": new_auth, "version": other})
    assert_error(resp, 400, "M_INVALID_PARAM")
    resp = alice.put(path, {"algorithm": ALGORITHM, "auth_data": new_auth, "version": "77"})
    assert_error(resp, 400, "M_INVALID_PARAM")
    resp = alice.put(path, {"algorithm": ALGORITHM, "auth_data": {"public_key": "short"}})
    assert_error(resp, 400, "M_BAD_JSON")
    resp = alice.put(path, {"algorithm": ALGORITHM})
    assert resp.status == 400, resp
    resp = alice.put("room_keys/version/77", {"algorithm": ALGORITHM, "auth_data": new_auth})
    assert_error(resp, 404, "M_NOT_FOUND")

    assert version_info(alice, version) == before


BAD_AUTH_DATA = [
    {},
    {"public_key": None},
    {"public_key": 5},
    {"public_key": ""},
    {"public_key": PUBLIC_KEY[:-2]},  # 31 bytes
    {"public_key": PUBLIC_KEY + "AAAA"},  # 35 bytes
    {"public_key": PUBLIC_KEY + "="},  # padded
    {"public_key": PUBLIC_KEY[:4] + "!!!!" + PUBLIC_KEY[4:]},
    {"public_key": "not a key"},
]


@pytest.mark.parametrize("auth_data", BAD_AUTH_DATA)
def test_create_refuses_a_bad_public_key(alice: Client, auth_data: JsonDict) -> None:
    resp = alice.post("room_keys/version", {"algorithm": ALGORITHM, "auth_data": auth_data})
    assert_error(resp, 400, "M_BAD_JSON")
    assert_error(alice.get("room_keys/version"), 404, "M_NOT_FOUND")


def test_create_needs_algorithm_and_auth_data(alice: Client) -> None:
    for body in ({"auth_data": {"public_key": PUBLIC_KEY}}, {"algorithm": ALGORITHM}):
        assert alice.post("room_keys/version", body).status == 400
    resp = alice.post("room_keys/version", {"algorithm": ALGORITHM, "auth_data": "x"})
    assert resp.status == 400, resp
    assert_error(alice.get("room_keys/version"), 404, "M_NOT_FOUND")


def test_other_algorithms_are_stored_as_sent(alice: Client) -> None:
    auth_data = {"anything": [1, {"nested": None}], "public_key": "not checked"}
    version = create_backup(alice, auth_data, algorithm="org.example.backup.v1")
    assert version_info(alice) == {
        "algorithm": "org.example.backup.v1",
        "auth_data": auth_data,
        "count": 0,
        "etag": version_info(alice)["etag"],
        "version": version,
    }
    data = {
        "first_message_index": 2,
        "forwarded_count": 1,
        "is_verified": True,
        "session_data": {"session_key": "whatever this algorithm wants", "n": [1, 2.5]},
    }
    upload_ok(alice, "session", version, ROOM, SESSION, data)
    assert get_session(alice, version, ROOM, SESSION) == data


def test_delete_version_deletes_its_keys(alice: Client) -> None:
    version = create_backup(alice)
    for i in range(3):
        upload_ok(alice, "bulk", version, ROOM, f"s{i}", key_data())
    assert len(backup_key_rows(alice.server, alice.user_id)) == 3

    assert alice.delete(f"room_keys/version/{version}").status == 200
    assert_error(alice.get(keys_path(), params={"version": version}), 404, "M_NOT_FOUND")
    assert_error(alice.get(keys_path(ROOM, "s0"), params={"version": version}), 404, "M_NOT_FOUND")
    assert backup_key_rows(alice.server, alice.user_id) == []

    newer = create_backup(alice)
    assert all_keys(alice, newer) == {"rooms": {}}
    assert version_info(alice)["count"] == 0


def test_deleting_a_deleted_version_succeeds(alice: Client) -> None:
    """The spec: "If the backup was previously deleted, the call should succeed"."""
    version = create_backup(alice)
    assert alice.delete(f"room_keys/version/{version}").status == 200
    resp = alice.delete(f"room_keys/version/{version}")
    assert resp.status == 200, resp
    assert_error(alice.get(f"room_keys/version/{version}"), 404, "M_NOT_FOUND")
    assert_error(alice.delete("room_keys/version/42"), 404, "M_NOT_FOUND")


# Writes go only to the current version


@pytest.mark.parametrize("route", ROUTES)
def test_upload_to_an_older_version_is_forbidden(alice: Client, route: str) -> None:
    old = create_backup(alice)
    current = create_backup(alice)
    resp = put_key(alice, route, old, ROOM, SESSION, key_data())
    assert_error(resp, 403, "M_WRONG_ROOM_KEYS_VERSION")
    assert resp.body["current_version"] == current
    assert all_keys(alice, old) == {"rooms": {}}
    assert version_info(alice, old)["count"] == 0
    upload_ok(alice, route, current, ROOM, SESSION, key_data())
    assert version_info(alice, current)["count"] == 1


@pytest.mark.parametrize("route", ROUTES)
def test_upload_without_backup_or_to_an_unknown_version_is_404(alice: Client, route: str) -> None:
    assert_error(put_key(alice, route, "1", ROOM, SESSION, key_data()), 404, "M_NOT_FOUND")
    current = create_backup(alice)
    deleted = create_backup(alice)
    assert alice.delete(f"room_keys/version/{deleted}").status == 200
    for version in ("99", deleted, "abc"):
        resp = put_key(alice, route, version, ROOM, SESSION, key_data())
        assert_error(resp, 404, "M_NOT_FOUND")
    assert all_keys(alice, current) == {"rooms": {}}


@pytest.mark.parametrize("route", ROUTES)
def test_version_parameter_is_required(alice: Client, route: str) -> None:
    version = create_backup(alice)
    room = None if route == "bulk" else ROOM
    session = SESSION if route == "session" else None
    data = key_data()
    body = (
        {"rooms": {ROOM: {"sessions": {SESSION: data}}}}
        if route == "bulk"
        else {"sessions": {SESSION: data}}
        if route == "room"
        else data
    )
    for method in ("PUT", "GET", "DELETE"):
        resp = alice.request(method, keys_path(room, session), body if method == "PUT" else None)
        assert_error(resp, 400, "M_MISSING_PARAM")
    assert all_keys(alice, version) == {"rooms": {}}


# count and etag


def test_count_and_etag_follow_the_stored_keys(alice: Client) -> None:
    version = create_backup(alice)
    info = version_info(alice)
    assert info["count"] == 0
    etags = [info["etag"]]

    def check(result: JsonDict, count: int, changed: bool) -> None:
        assert result["count"] == count
        if changed:
            assert result["etag"] not in etags, (result, etags)
            etags.append(result["etag"])
        else:
            assert result["etag"] == etags[-1]
        current = version_info(alice)
        assert (current["count"], current["etag"]) == (count, result["etag"])

    first, second = key_data(False, 3, 1), key_data(False, 2, 0)
    body = {
        "rooms": {
            ROOM: {"sessions": {SESSION: first}},
            OTHER_ROOM: {"sessions": {SESSION: second}},
        }
    }
    resp = alice.put(keys_path(), body, params={"version": version})
    assert resp.status == 200, resp
    check(resp.body, 2, changed=True)

    # The same upload again changes nothing.
    resp = alice.put(keys_path(), body, params={"version": version})
    assert resp.status == 200, resp
    check(resp.body, 2, changed=False)
    # Neither does a worse copy, on any route.
    for route in ROUTES:
        check(upload_ok(alice, route, version, ROOM, SESSION, key_data(False, 9, 0)), 2, False)
    # A better copy replaces: the etag moves, the count does not.
    check(upload_ok(alice, "session", version, ROOM, SESSION, key_data(True, 3, 1)), 2, True)
    # A new session adds one.
    check(upload_ok(alice, "room", version, ROOM, OTHER_SESSION, key_data()), 3, True)

    # Deletes move both.
    resp = alice.delete(keys_path(ROOM, SESSION), params={"version": version})
    assert resp.status == 200, resp
    check(resp.body, 2, changed=True)
    resp = alice.delete(keys_path(ROOM), params={"version": version})
    assert resp.status == 200, resp
    check(resp.body, 1, changed=True)
    resp = alice.delete(keys_path(), params={"version": version})
    assert resp.status == 200, resp
    check(resp.body, 0, changed=True)


# Which key is kept, on every route


# (stored, uploaded, uploaded replaces stored), as (is_verified, first_message_index,
# forwarded_count)
KEEP_CASES = {
    "verified-beats-unverified": ((False, 0, 0), (True, 7, 5), True),
    "unverified-loses-to-verified": ((True, 7, 5), (False, 0, 0), False),
    "lower-index-wins": ((False, 5, 0), (False, 2, 4), True),
    "higher-index-loses": ((True, 2, 4), (True, 5, 0), False),
    "fewer-forwards-win": ((True, 3, 2), (True, 3, 1), True),
    "more-forwards-lose": ((False, 3, 1), (False, 3, 2), False),
    "tie-keeps-stored": ((True, 4, 1), (True, 4, 1), False),
}


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("case", list(KEEP_CASES))
def test_which_key_is_kept(alice: Client, route: str, case: str) -> None:
    stored_quality, new_quality, replaces = KEEP_CASES[case]
    version = create_backup(alice)
    stored = key_data(*stored_quality, tag="stored")
    before = upload_ok(alice, route, version, ROOM, SESSION, stored)
    assert before["count"] == 1
    assert get_session(alice, version, ROOM, SESSION) == stored

    uploaded = key_data(*new_quality, tag="uploaded")
    after = upload_ok(alice, route, version, ROOM, SESSION, uploaded)
    assert after["count"] == 1
    kept = get_session(alice, version, ROOM, SESSION)
    if replaces:
        assert kept == uploaded
        assert after["etag"] != before["etag"]
    else:
        assert kept == stored  # including session_data, untouched
        assert after["etag"] == before["etag"]
    assert version_info(alice)["etag"] == after["etag"]


def upload_at_once(
    server: ServerProcess, token: str | None, version: str, bodies: list[JsonDict]
) -> list[Any]:
    """PUT /room_keys/keys with each body from its own thread, released together."""
    barrier = threading.Barrier(len(bodies))
    results: list[Any] = [None] * len(bodies)

    def upload(index: int) -> None:
        client = Client(server, token)  # a requests.Session per thread
        barrier.wait()
        results[index] = client.put(keys_path(), bodies[index], params={"version": version})

    threads = [threading.Thread(target=upload, args=(i,)) for i in range(len(bodies))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return results


def test_concurrent_uploads_keep_the_better_key(server: ServerProcess) -> None:
    """Two devices upload overlapping sessions at once; whatever the interleaving, the
    better copy of every session is the one stored and the count is exact."""
    user = new_user(server)
    version = create_backup(user)
    rounds, shared, seeded, own = 6, 12, 6, 4
    for n in range(rounds):
        room = f"!concurrent{n}:example.org"
        # Half the shared sessions already hold a copy worse than both uploads.
        for i in range(seeded):
            upload_ok(user, "session", version, room, f"s{i}", key_data(False, 50, 9))
        worse = {f"s{i}": key_data(False, 5, 0, tag=f"worse{i}") for i in range(shared)}
        better = {f"s{i}": key_data(True, 1, 0, tag=f"better{i}") for i in range(shared)}
        worse.update({f"w{i}": key_data() for i in range(own)})
        better.update({f"b{i}": key_data() for i in range(own)})
        uploads = [worse, better] if n % 2 else [better, worse]

        bodies = [{"rooms": {room: {"sessions": sessions}}} for sessions in uploads]
        for resp in upload_at_once(server, user.token, version, bodies):
            assert resp is not None and resp.status == 200, resp

        stored = user.get(keys_path(room), params={"version": version})
        assert stored.status == 200, stored
        sessions = stored.body["sessions"]
        assert set(sessions) == set(worse) | set(better)
        for i in range(shared):
            assert sessions[f"s{i}"] == better[f"s{i}"], (n, i)
        for i in range(own):
            assert sessions[f"w{i}"] == worse[f"w{i}"]
            assert sessions[f"b{i}"] == better[f"b{i}"]
        assert version_info(user)["count"] == (n + 1) * (shared + 2 * own)


# Shape checks


BAD_SESSION_DATA = {
    "plaintext-session-key": {"session_key": "AgAAAADxKHa9uFxcXzwYoNueL5Xqi69IkD4sni8Llf"},
    "extra-session-key": {
        **encrypt_for_backup(PUBLIC_KEY, {}),
        "session_key": "AgAAAADxKHa9uFxcXzwYoNueL5Xqi69IkD4sni8Llf",
    },
    "missing-mac": {k: v for k, v in encrypt_for_backup(PUBLIC_KEY, {}).items() if k != "mac"},
    "missing-ephemeral": {
        k: v for k, v in encrypt_for_backup(PUBLIC_KEY, {}).items() if k != "ephemeral"
    },
    "not-base64": {**encrypt_for_backup(PUBLIC_KEY, {}), "ciphertext": "{plain json}"},
    "short-ephemeral": {**encrypt_for_backup(PUBLIC_KEY, {}), "ephemeral": "AAAA"},
    "empty": {},
}


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("case", list(BAD_SESSION_DATA))
def test_session_data_must_be_the_encrypted_blob(alice: Client, route: str, case: str) -> None:
    version = create_backup(alice)
    before = version_info(alice)
    bad = {**key_data(), "session_data": BAD_SESSION_DATA[case]}
    resp = put_key(alice, route, version, ROOM, SESSION, bad)
    assert_error(resp, 400, "M_BAD_JSON")
    if route != "session":
        # A valid key beside the bad one in the same request is not stored either.
        sessions = {OTHER_SESSION: key_data(), SESSION: bad}
        if route == "bulk":
            body: JsonDict = {"rooms": {ROOM: {"sessions": sessions}}}
            resp = alice.put(keys_path(), body, params={"version": version})
        else:
            resp = alice.put(keys_path(ROOM), {"sessions": sessions}, params={"version": version})
        assert_error(resp, 400, "M_BAD_JSON")
    assert all_keys(alice, version) == {"rooms": {}}
    assert version_info(alice) == before


MISSING_OR_WRONG = {
    "no-first-message-index": {"first_message_index": None},
    "no-forwarded-count": {"forwarded_count": None},
    "no-is-verified": {"is_verified": None},
    "no-session-data": {"session_data": None},
    "index-is-string": {"first_message_index": "0"},
    "index-is-negative": {"first_message_index": -1},
    "index-too-large": {"first_message_index": 2**63},
    "forwarded-too-large": {"forwarded_count": 2**64 - 1},
    "verified-is-int": {"is_verified": 1},
    "session-data-is-string": {"session_data": "ciphertext"},
}


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("case", list(MISSING_OR_WRONG))
def test_malformed_key_data_is_400(alice: Client, route: str, case: str) -> None:
    version = create_backup(alice)
    data = {**key_data(), **MISSING_OR_WRONG[case]}
    data = {k: v for k, v in data.items() if v is not None}
    resp = put_key(alice, route, version, ROOM, SESSION, data)
    assert resp.status == 400, resp
    assert resp.body["errcode"] in ("M_BAD_JSON", "M_MISSING_PARAM"), resp
    assert all_keys(alice, version) == {"rooms": {}}


def test_malformed_bodies_are_400(alice: Client) -> None:
    version = create_backup(alice)
    params = {"version": version}
    good = key_data()
    for body in (
        {},
        {"rooms": []},
        {"rooms": {ROOM: []}},
        {"rooms": {ROOM: {}}},
        {"rooms": {ROOM: {"sessions": [good]}}},
        {"rooms": {ROOM: {"sessions": {SESSION: "x"}}}},
    ):
        resp = alice.put(keys_path(), body, params=params)
        assert resp.status == 400, (body, resp)
    for body in ({}, {"sessions": None}, {"sessions": [good]}, {"sessions": {SESSION: 1}}):
        resp = alice.put(keys_path(ROOM), body, params=params)
        assert resp.status == 400, (body, resp)
    for route in ROUTES:
        room = None if route == "bulk" else ROOM
        session = SESSION if route == "session" else None
        for raw in (b"not json", b"[1, 2]", b""):
            resp = alice.request("PUT", keys_path(room, session), raw=raw, params=params)
            assert resp.status == 400, (route, raw, resp)
    assert all_keys(alice, version) == {"rooms": {}}
    assert version_info(alice)["count"] == 0


# Reads and deletes on every route


def _three_keys(user: Client, version: str) -> dict[tuple[str, str], JsonDict]:
    keys = {
        (ROOM, SESSION): key_data(True, 0, 0),
        (ROOM, OTHER_SESSION): key_data(False, 4, 1),
        (OTHER_ROOM, SESSION): key_data(False, 1, 2),
    }
    rooms: JsonDict = {}
    for (room, session), data in keys.items():
        rooms.setdefault(room, {"sessions": {}})["sessions"][session] = data
    resp = user.put(keys_path(), {"rooms": rooms}, params={"version": version})
    assert resp.status == 200, resp
    assert resp.body["count"] == 3
    return keys


def test_get_keys_on_every_route(alice: Client) -> None:
    version = create_backup(alice)
    assert all_keys(alice, version) == {"rooms": {}}
    keys = _three_keys(alice, version)
    params = {"version": version}

    assert all_keys(alice, version) == {
        "rooms": {
            ROOM: {
                "sessions": {SESSION: keys[ROOM, SESSION], OTHER_SESSION: keys[ROOM, OTHER_SESSION]}
            },
            OTHER_ROOM: {"sessions": {SESSION: keys[OTHER_ROOM, SESSION]}},
        }
    }
    resp = alice.get(keys_path(ROOM), params=params)
    assert resp.status == 200, resp
    assert resp.body == {
        "sessions": {SESSION: keys[ROOM, SESSION], OTHER_SESSION: keys[ROOM, OTHER_SESSION]}
    }
    resp = alice.get(keys_path("!empty:example.org"), params=params)
    assert resp.status == 200, resp
    assert resp.body == {"sessions": {}}
    for (room, session), data in keys.items():
        assert get_session(alice, version, room, session) == data
    assert_error(alice.get(keys_path(OTHER_ROOM, OTHER_SESSION), params=params), 404, "M_NOT_FOUND")
    assert_error(
        alice.get(keys_path("!empty:example.org", SESSION), params=params), 404, "M_NOT_FOUND"
    )

    # Unknown versions are 404 on every route.
    for path in (keys_path(), keys_path(ROOM), keys_path(ROOM, SESSION)):
        assert_error(alice.get(path, params={"version": "99"}), 404, "M_NOT_FOUND")

    # An older version stays readable after a new one is created.
    newer = create_backup(alice)
    assert all_keys(alice, newer) == {"rooms": {}}
    assert get_session(alice, version, ROOM, SESSION) == keys[ROOM, SESSION]


def test_delete_keys_on_every_route(alice: Client) -> None:
    version = create_backup(alice)
    keys = _three_keys(alice, version)
    params = {"version": version}

    def delete(path: str, count: int) -> None:
        resp = alice.delete(path, params=params)
        assert resp.status == 200, resp
        assert resp.body["count"] == count
        info = version_info(alice)
        assert (info["count"], info["etag"]) == (count, resp.body["etag"])

    delete(keys_path(ROOM, SESSION), 2)
    assert_error(alice.get(keys_path(ROOM, SESSION), params=params), 404, "M_NOT_FOUND")
    assert get_session(alice, version, ROOM, OTHER_SESSION) == keys[ROOM, OTHER_SESSION]
    assert get_session(alice, version, OTHER_ROOM, SESSION) == keys[OTHER_ROOM, SESSION]

    _three_keys(alice, version)
    delete(keys_path(ROOM), 1)
    assert all_keys(alice, version) == {
        "rooms": {OTHER_ROOM: {"sessions": {SESSION: keys[OTHER_ROOM, SESSION]}}}
    }

    _three_keys(alice, version)
    delete(keys_path(), 0)
    assert all_keys(alice, version) == {"rooms": {}}
    assert backup_key_rows(alice.server, alice.user_id) == []

    for path in (keys_path(), keys_path(ROOM), keys_path(ROOM, SESSION)):
        assert_error(alice.delete(path, params={"version": "99"}), 404, "M_NOT_FOUND")
