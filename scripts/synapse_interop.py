"""Federation with a real Synapse, both ways, over loopback TLS with a CA made here.

    ./scripts/run-synapse-interop [--db sqlite|postgres]

Synapse (from PyPI, in bench-data/synapse-venv as for the benchmark) and our server each
get a ``localhost:<port>`` server name and a certificate from the same throw-away CA, which
both trust. Then, in a room on our server joined by a Synapse user and in a room on Synapse
joined by one of ours: messages, an edit and a redaction each way, typing and read receipts
each way. Prints one line per check and exits 1 if any failed.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import requests
import yaml

from scripts.bench import ensure_synapse
from tests.federation_harness import (
    FederationCA,
    bodies_in,
    make_federating_server,
    make_test_ca,
    room_messages,
)
from tests.harness import (
    PASSWORD,
    Client,
    ServerProcess,
    create_pg_database,
    drop_pg_database,
    free_port,
    q,
)

UNLIMITED = {"per_second": 100000, "burst_count": 100000}


@dataclass
class SynapseProcess:
    """Enough of ServerProcess for tests.harness.Client."""

    base_url: str
    server_name: str
    directory: str
    process: subprocess.Popen[bytes] | None = None
    pg_database: str | None = None
    _extra: dict[str, Any] = field(default_factory=dict)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
        if self.pg_database:
            drop_pg_database(self.pg_database)


def start_synapse(db_kind: str, ca: FederationCA) -> SynapseProcess:
    python = ensure_synapse()
    directory = tempfile.mkdtemp(prefix="interop-synapse-")
    client_port, federation_port = free_port(), free_port()
    server_name = f"localhost:{federation_port}"
    config_path = os.path.join(directory, "homeserver.yaml")
    subprocess.run(
        [python, "-m", "synapse.app.homeserver", "--generate-config", "--server-name",
         server_name, "--config-path", config_path, "--data-directory", directory,
         "--report-stats=no"],
        check=True, capture_output=True, cwd=directory,
    )  # fmt: skip
    with open(config_path, encoding="utf-8") as f:
        config = yaml.safe_load(f)
    pg_database = create_pg_database() if db_kind == "postgres" else None
    config.update({
        "listeners": [
            {"port": client_port, "bind_addresses": ["127.0.0.1"], "type": "http",
             "tls": False, "resources": [{"names": ["client"], "compress": False}]},
            {"port": federation_port, "bind_addresses": ["127.0.0.1"], "type": "http",
             "tls": True, "resources": [{"names": ["federation"], "compress": False}]},
        ],
        "tls_certificate_path": ca.cert_path,
        "tls_private_key_path": ca.key_path,
        "federation_custom_ca_list": [ca.ca_path],
        "federation_verify_certificates": True,
        "ip_range_blacklist": [],
        "federation_ip_range_blacklist": [],
        "ip_range_whitelist": ["127.0.0.0/8"],
        "trusted_key_servers": [],
        "suppress_key_server_warning": True,
        "enable_registration": True,
        "enable_registration_without_verification": True,
        "bcrypt_rounds": 4,
        "rc_message": UNLIMITED, "rc_registration": UNLIMITED,
        "rc_login": {"address": UNLIMITED, "account": UNLIMITED, "failed_attempts": UNLIMITED},
        "rc_joins": {"local": UNLIMITED, "remote": UNLIMITED},
        "rc_joins_per_room": UNLIMITED,
        "rc_federation": {"window_size": 1000, "sleep_limit": 1000, "sleep_delay": 1,
                          "reject_limit": 1000, "concurrent": 100},
        "presence": {"enabled": False},
        "report_stats": False,
    })  # fmt: skip
    if pg_database is not None:
        config["database"] = {
            "name": "psycopg2",
            "args": {"host": "127.0.0.1", "port": 5432, "dbname": pg_database},
        }
    with open(config_path, "w", encoding="utf-8") as f:
        yaml.safe_dump(config, f)
    synapse = SynapseProcess(f"http://127.0.0.1:{client_port}", server_name, directory,
                             pg_database=pg_database)  # fmt: skip
    log = open(os.path.join(directory, "stdout.log"), "wb")  # noqa: SIM115 (kept open)
    synapse.process = subprocess.Popen(
        [python, "-m", "synapse.app.homeserver", "--config-path", config_path],
        cwd=directory, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            if requests.get(synapse.base_url + "/_matrix/client/versions", timeout=2).ok:
                return synapse
        except requests.RequestException:
            pass
        if synapse.process.poll() is not None:
            break
        time.sleep(0.5)
    synapse.stop()
    raise RuntimeError(f"Synapse did not start; see {directory}")


class Checks:
    def __init__(self) -> None:
        self.failed: list[str] = []

    def expect(self, name: str, check: Callable[[], Any], timeout: float = 20) -> bool:
        deadline = time.monotonic() + timeout
        error = ""
        while time.monotonic() < deadline:
            try:
                if check():
                    print(f"ok    {name}", flush=True)
                    return True
            except Exception as e:  # report, keep polling
                error = f"{type(e).__name__}: {e}"
            time.sleep(0.25)
        print(f"FAIL  {name} {error}", flush=True)
        self.failed.append(name)
        return False


def send_text(client: Client, room_id: str, body: str, **content: Any) -> str:
    resp = client.put(
        f"rooms/{q(room_id)}/send/m.room.message/{secrets.token_hex(6)}",
        {"msgtype": "m.text", "body": body, **content},
    )
    assert resp.status == 200, resp
    return str(resp.body["event_id"])


def fresh_sync(client: Client) -> Any:
    """An initial sync that no response cache answers (Synapse caches identical requests
    for a while): a filter that changes nothing but differs each time."""
    nonce = {"presence": {"not_types": [f"x.nonce.{secrets.token_hex(4)}"]}}
    resp = client.get("sync", params={"timeout": "0", "filter": json.dumps(nonce)})
    assert resp.status == 200, resp
    return resp.body


def sees_typing(client: Client, room_id: str, user_id: str) -> bool:
    body = fresh_sync(client)
    room = body["rooms"]["join"].get(room_id, {})
    return any(
        e["type"] == "m.typing" and user_id in e["content"]["user_ids"]
        for e in room.get("ephemeral", {}).get("events", [])
    )


def receipt_seen(client: Client, room_id: str, event_id: str, user_id: str) -> bool:
    room = fresh_sync(client)["rooms"]["join"].get(room_id, {})
    for e in room.get("ephemeral", {}).get("events", []):
        if e["type"] == "m.receipt" and user_id in e["content"].get(event_id, {}).get("m.read", {}):
            return True
    return False


def talk(checks: Checks, label: str, host: Client, guest: Client, room_id: str) -> None:
    """Messages, edits, redactions, typing and receipts, both ways."""
    one_way(checks, f"{label}: host->guest", host, guest, room_id)
    one_way(checks, f"{label}: guest->host", guest, host, room_id)


def one_way(checks: Checks, label: str, sender: Client, reader: Client, room_id: str) -> None:
    text = f"{label} {secrets.token_hex(3)}"
    event_id = send_text(sender, room_id, text)
    checks.expect(f"{label}: message", lambda: text in bodies_in(reader, room_id))
    send_text(sender, room_id, "* edited", **{
        "m.new_content": {"msgtype": "m.text", "body": text + " (edited)"},
        "m.relates_to": {"rel_type": "m.replace", "event_id": event_id},
    })  # fmt: skip

    def edited() -> bool:
        return any(
            (e["content"].get("m.relates_to") or {}).get("event_id") == event_id
            for e in room_messages(reader, room_id)
        )

    checks.expect(f"{label}: edit", edited)
    doomed_text = f"to be redacted {secrets.token_hex(3)}"
    doomed = send_text(sender, room_id, doomed_text)
    checks.expect(f"{label}: message to redact", lambda: doomed_text in bodies_in(reader, room_id))
    resp = sender.put(f"rooms/{q(room_id)}/redact/{q(doomed)}/{secrets.token_hex(4)}", {})
    assert resp.status == 200, resp

    def redacted() -> bool:
        event = reader.get(f"rooms/{q(room_id)}/event/{q(doomed)}")
        return event.status == 200 and "body" not in event.body["content"]

    checks.expect(f"{label}: redaction", redacted)
    sender_id = sender.user_id or ""
    typing = sender.put(f"rooms/{q(room_id)}/typing/{q(sender_id)}",
                        {"typing": True, "timeout": 30000})  # fmt: skip
    assert typing.status == 200, typing
    checks.expect(f"{label}: typing", lambda: sees_typing(reader, room_id, sender_id))
    target_text = f"read receipt target {secrets.token_hex(3)}"
    last = send_text(reader, room_id, target_text)
    checks.expect(f"{label}: receipt target", lambda: target_text in bodies_in(sender, room_id))
    assert sender.post(f"rooms/{q(room_id)}/receipt/m.read/{q(last)}", {}).status == 200
    checks.expect(f"{label}: receipt", lambda: receipt_seen(reader, room_id, last, sender_id))


async def encrypted_talk(
    checks: Checks, label: str, host: tuple[Any, str], guest: tuple[Any, str]
) -> None:
    """An encrypted room created by ``host``'s user, the other invited: olm clients
    (matrix-nio) on both sides, a message each way, each decrypted by the other."""
    import nio

    from tests.test_e2ee_private import MEGOLM, housekeeping, receive_bodies, sync_once

    clients = []
    stores = [tempfile.mkdtemp(prefix="interop-olm-") for _ in range(2)]
    for (server, user_id), store in zip((host, guest), stores, strict=True):
        config = nio.AsyncClientConfig(encryption_enabled=True, store_sync_tokens=True)
        client = nio.AsyncClient(server.base_url, user_id, store_path=store, config=config)
        login = await client.login(PASSWORD, device_name=f"interop {label}")
        assert isinstance(login, nio.LoginResponse), login
        await client.sync(timeout=0, full_state=True)
        await housekeeping(client)
        clients.append(client)
    owner, invitee = clients
    try:
        created = await owner.room_create(
            invite=[invitee.user_id],
            initial_state=[{"type": "m.room.encryption", "state_key": "",
                            "content": {"algorithm": MEGOLM}}],
        )  # fmt: skip
        assert isinstance(created, nio.RoomCreateResponse), created
        room_id = created.room_id
        for _ in range(40):
            await sync_once(invitee)
            if room_id in invitee.invited_rooms:
                break
        joined = await invitee.join(room_id)
        assert isinstance(joined, nio.JoinResponse), joined
        for _ in range(4):
            await sync_once(owner)
            await sync_once(invitee)
        for sender, reader, who in (
            (owner, invitee, "host->guest"),
            (invitee, owner, "guest->host"),
        ):
            text = f"encrypted {who} {secrets.token_hex(3)}"
            sent = await sender.room_send(room_id, "m.room.message",
                                          {"msgtype": "m.text", "body": text},
                                          ignore_unverified_devices=True)  # fmt: skip
            assert isinstance(sent, nio.RoomSendResponse), sent
            try:
                await receive_bodies(reader, room_id, {text}, deadline=30)
                print(f"ok    {label}: encrypted message {who}", flush=True)
            except AssertionError as e:
                print(f"FAIL  {label}: encrypted message {who}: {e}", flush=True)
                checks.failed.append(f"{label}: encrypted {who}")
            await sync_once(sender)
        # A new device of the invitee's is noticed by the owner's client.
        config = nio.AsyncClientConfig(encryption_enabled=True, store_sync_tokens=True)
        phone_store = tempfile.mkdtemp(prefix="interop-olm-")
        phone = nio.AsyncClient(guest[0].base_url, guest[1], store_path=phone_store, config=config)
        clients.append(phone)
        assert isinstance(await phone.login(PASSWORD, device_name="new phone"), nio.LoginResponse)
        await phone.sync(timeout=0, full_state=True)
        await housekeeping(phone)
        noticed = False
        for _ in range(40):
            await sync_once(owner, timeout=500)
            if phone.device_id in owner.device_store[phone.user_id]:
                noticed = True
                break
        print(f"{'ok   ' if noticed else 'FAIL '} {label}: new device of the guest noticed",
              flush=True)  # fmt: skip
        if not noticed:
            checks.failed.append(f"{label}: new device noticed")
    finally:
        for client in clients:
            await client.close()


def run(db_kind: str) -> int:
    ca = make_test_ca()
    ours: ServerProcess = make_federating_server(db_kind, ca)
    ours.start()
    synapse = start_synapse(db_kind, ca)
    checks = Checks()
    try:
        alice = Client(ours)
        assert alice.register().status == 200
        sue = Client(synapse)  # type: ignore[arg-type]
        assert sue.register().status == 200
        print(f"ours: {ours.server_name}  synapse: {synapse.server_name}", flush=True)

        # A Synapse user in a room of ours.
        room = alice.post("createRoom", {"preset": "public_chat", "name": "Ours"}).body["room_id"]
        joined = sue.post(f"join/{q(room)}", {}, params={"server_name": ours.server_name})
        print("synapse user joins our room:", joined.status, joined.body, flush=True)
        if joined.status == 200:
            checks.expect("ours: Synapse sees the room name",
                          lambda: sue.get(f"rooms/{q(room)}/state/m.room.name").body
                          == {"name": "Ours"})  # fmt: skip
            checks.expect("ours: both joined on our side", lambda: set(
                alice.get(f"rooms/{q(room)}/joined_members").body["joined"])
                == {alice.user_id, sue.user_id})  # fmt: skip
            talk(checks, "room on ours", alice, sue, room)
        else:
            checks.failed.append("synapse user joins our room")

        # One of ours in a room on Synapse.
        room = sue.post("createRoom", {"preset": "public_chat", "name": "Theirs"}).body["room_id"]
        joined = alice.post(f"join/{q(room)}", {}, params={"server_name": synapse.server_name})
        print("our user joins Synapse's room:", joined.status, joined.body, flush=True)
        if joined.status == 200:
            checks.expect("synapse: we see the room name",
                          lambda: alice.get(f"rooms/{q(room)}/state/m.room.name").body
                          == {"name": "Theirs"})  # fmt: skip
            talk(checks, "room on Synapse", sue, alice, room)
        else:
            checks.failed.append("our user joins Synapse's room")

        # Encrypted rooms, created on either side.
        import asyncio

        ours_user = (ours, alice.user_id or "")
        theirs_user = (synapse, sue.user_id or "")
        asyncio.run(encrypted_talk(checks, "encrypted room on ours", ours_user, theirs_user))
        asyncio.run(encrypted_talk(checks, "encrypted room on Synapse", theirs_user, ours_user))
    finally:
        synapse.stop()
        if checks.failed:
            print(f"our log: {ours.directory}/homeserver.log; Synapse: {synapse.directory}")
            ours.stop(cleanup=False)
        else:
            ours.stop()
    print(f"\n{len(checks.failed)} failed" + (f": {checks.failed}" if checks.failed else ""))
    return 1 if checks.failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    return run(parser.parse_args(argv).db)


if __name__ == "__main__":
    sys.exit(main())
