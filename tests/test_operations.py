"""Running the server: metrics, TLS, the command line, config errors, schema versions, restarts."""

from __future__ import annotations

import datetime
import ipaddress
import os
import re
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests
import urllib3
import yaml

from tests.harness import PG_ARGS, Client, ServerProcess, new_user


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "homeserver", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


def set_schema_version(server: ServerProcess, version: int) -> None:
    if server.db_kind == "sqlite":
        conn = sqlite3.connect(server.sqlite_path)
        with conn:
            conn.execute("UPDATE schema_version SET version = ?", (version,))
        conn.close()
        return
    import psycopg2

    pg = psycopg2.connect(**{**PG_ARGS, "dbname": server.pg_database})
    with pg, pg.cursor() as cur:
        cur.execute("UPDATE schema_version SET version = %s", (version,))
    pg.close()


def get_schema_version(server: ServerProcess) -> int:
    if server.db_kind == "sqlite":
        conn = sqlite3.connect(server.sqlite_path)
        try:
            return int(conn.execute("SELECT version FROM schema_version").fetchone()[0])
        finally:
            conn.close()
    import psycopg2

    pg = psycopg2.connect(**{**PG_ARGS, "dbname": server.pg_database})
    try:
        cur = pg.cursor()
        cur.execute("SELECT version FROM schema_version")
        return int(cur.fetchone()[0])
    finally:
        pg.close()


# Metrics


def test_metrics_count_requests_and_transactions(alice: Client) -> None:
    for _ in range(3):
        assert alice.get("account/whoami").status == 200
    resp = requests.get(alice.server.metrics_url + "/metrics", timeout=10)
    assert resp.status_code == 200
    text = resp.text
    whoami = [
        line
        for line in text.splitlines()
        if line.startswith("homeserver_http_requests_total{") and 'servlet="whoami"' in line
    ]
    assert whoami, text
    assert any('code="200"' in line and 'method="GET"' in line for line in whoami), whoami
    total = sum(float(line.rsplit(" ", 1)[1]) for line in whoami)
    assert total >= 3
    assert re.search(r"^homeserver_db_transaction_duration_seconds_count\{", text, re.M), text
    # Collector pauses are timed (young collections happen within a few requests).
    young = re.search(r'^homeserver_gc_pause_seconds_count\{generation="0"\} (\S+)$', text, re.M)
    assert young and float(young.group(1)) > 0, text
    # The metrics port serves metrics only, and the client port does not serve them.
    assert requests.get(alice.server.metrics_url + "/_matrix/client/versions").status_code == 404
    assert (
        "homeserver_http_requests_total"
        not in requests.get(alice.server.base_url + "/metrics", timeout=10).text
    )


# TLS


def write_self_signed_cert(directory: str) -> tuple[str, str]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path = os.path.join(directory, "tls.crt")
    key_path = os.path.join(directory, "tls.key")
    with open(cert_path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(key_path, "wb") as f:
        f.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    return cert_path, key_path


def test_tls_listener(server_factory: Callable[..., ServerProcess]) -> None:
    srv = server_factory(start=False)
    port = int(srv.base_url.rsplit(":", 1)[1])
    cert_path, key_path = write_self_signed_cert(srv.directory)
    srv.config["listeners"] = [
        {
            "port": port,
            "bind_addresses": ["127.0.0.1"],
            "resources": ["client"],
            "tls": True,
            "tls_certificate_path": cert_path,
            "tls_private_key_path": key_path,
        }
    ]
    srv.start()
    url = f"https://127.0.0.1:{port}/_matrix/client/versions"
    with pytest.warns(urllib3.exceptions.InsecureRequestWarning):
        resp = requests.get(url, verify=False, timeout=10)
    assert resp.status_code == 200
    assert "versions" in resp.json()
    # The certificate served is the one configured: it verifies against itself.
    assert requests.get(url, verify=cert_path, timeout=10).status_code == 200
    # Plain HTTP on the TLS port gets no Matrix response.
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(f"http://127.0.0.1:{port}/_matrix/client/versions", timeout=10)


# The command line


def test_generate_config_writes_config_and_key_once(tmp_path: Path) -> None:
    config_path = tmp_path / "homeserver.yaml"
    args = ("--generate-config", "--server-name", "example.org", "-c", str(config_path))
    first = run_cli(*args, cwd=tmp_path)
    assert first.returncode == 0, first.stdout + first.stderr
    assert config_path.exists()
    raw = yaml.safe_load(config_path.read_text(encoding="utf-8"))
    assert raw["server_name"] == "example.org"
    key_path = tmp_path / raw["signing_key_path"]
    assert key_path.is_file()
    key_bytes = key_path.read_bytes()
    assert key_bytes.strip()
    # Secrets are not readable by other users.
    assert config_path.stat().st_mode & 0o077 == 0

    # The generated file is a valid configuration.
    from config.load import load_config

    loaded = load_config(str(config_path))
    assert loaded.server_name == "example.org"
    assert loaded.signing_key_path == str(key_path)

    edited = config_path.read_text(encoding="utf-8") + "\n# operator's edit\n"
    config_path.write_text(edited, encoding="utf-8")
    second = run_cli(*args, cwd=tmp_path)
    assert second.returncode == 0, second.stdout + second.stderr
    assert key_path.read_bytes() == key_bytes
    assert config_path.read_text(encoding="utf-8") == edited
    assert "already exists" in second.stdout


def test_generate_config_needs_server_name(tmp_path: Path) -> None:
    result = run_cli("--generate-config", "-c", str(tmp_path / "h.yaml"), cwd=tmp_path)
    assert result.returncode != 0
    assert "--server-name" in result.stderr
    assert not (tmp_path / "h.yaml").exists()


def minimal_config(tmp_path: Path, **extra: Any) -> Path:
    config: dict[str, Any] = {
        "server_name": "example.org",
        "signing_key_path": "signing.key",
        "database": {"name": "sqlite", "args": {"database": "homeserver.db"}},
        "listeners": [{"port": 0, "resources": ["client"]}],
    }
    config.update(extra)
    path = tmp_path / "homeserver.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ({"listeners": [{"port": "abc"}]}, "listeners.0.port"),
        ({"listners": []}, "listners"),
        ({"privacy": {"client_ip_retention": "forever"}}, "privacy.client_ip_retention"),
        ({"registration": {"enabled": "sometimes"}}, "registration.enabled"),
        (
            {"garbage_collection": {"full_collection_interval": "often"}},
            "garbage_collection.full_collection_interval",
        ),
    ],
)
def test_invalid_config_names_the_key(tmp_path: Path, extra: dict[str, Any], expected: str) -> None:
    path = minimal_config(tmp_path, **extra)
    result = run_cli("-c", str(path), cwd=tmp_path)
    assert result.returncode != 0
    assert expected in result.stderr, result.stderr
    assert "homeserver: ready" not in result.stdout
    assert "Traceback" not in result.stderr


def test_unknown_nested_key_names_section_and_key(tmp_path: Path) -> None:
    path = minimal_config(tmp_path, privacy={"client_ip_retension": "1d"})
    result = run_cli("-c", str(path), cwd=tmp_path)
    assert result.returncode != 0
    line = next(
        (ln for ln in result.stderr.splitlines() if "client_ip_retension" in ln), result.stderr
    )
    assert "privacy.client_ip_retension: unknown key" in line, result.stderr
    assert "homeserver: ready" not in result.stdout
    assert "Traceback" not in result.stderr


def test_missing_config_file_is_reported(tmp_path: Path) -> None:
    result = run_cli("-c", str(tmp_path / "absent.yaml"), cwd=tmp_path)
    assert result.returncode != 0
    assert "does not exist" in result.stderr
    assert "--generate-config" in result.stderr


# Database schema and restarts


def test_schema_newer_than_server_refuses_to_start(
    server_factory: Callable[..., ServerProcess],
) -> None:
    srv = server_factory()
    srv.stop(cleanup=False)
    set_schema_version(srv, 999)
    with pytest.raises(RuntimeError) as excinfo:
        srv.start()
    message = str(excinfo.value)
    assert "999" in message
    assert "newer" in message
    assert srv.process is not None
    assert srv.process.returncode not in (None, 0)
    # The database was left alone.
    assert get_schema_version(srv) == 999


def test_restart_keeps_users_and_sessions(server_factory: Callable[..., ServerProcess]) -> None:
    srv = server_factory()
    user = new_user(srv)
    assert user.user_id is not None
    old_token = user.token
    srv.restart()
    assert user.get("account/whoami").status == 200
    again = Client(srv)
    resp = again.login(user.user_id)
    assert resp.status == 200, resp
    assert again.get("account/whoami").body["user_id"] == user.user_id
    assert again.token != old_token
    # Login fails with a wrong password after the restart, too: the hash was kept.
    assert Client(srv).login(user.user_id, "not the password").status == 403


def test_caches_are_bounded_by_config_and_measured(server_factory: Any) -> None:
    """Every cache reports its size, capacity (from caches.sizes, scaled by the global
    factor), hits and misses; in-memory tables shrink back once their work is done."""
    import re
    import time

    import requests

    from tests.harness import create_room, new_user, q
    from tests.test_rooms_basic import send

    server = server_factory({"caches": {"global_factor": 2.0, "sizes": {"events": 123}}})
    alice = new_user(server)
    room_id = create_room(alice)
    for i in range(5):
        send(alice, room_id, f"m{i}")
    assert alice.get(f"rooms/{q(room_id)}/messages", params={"dir": "b"}).status == 200
    assert alice.put(f"rooms/{q(room_id)}/typing/{q(alice.user_id or '')}",
                     {"typing": True, "timeout": 5000}).status == 200  # fmt: skip
    assert alice.put(f"rooms/{q(room_id)}/typing/{q(alice.user_id or '')}",
                     {"typing": False}).status == 200  # fmt: skip
    time.sleep(0.2)
    text = requests.get(server.metrics_url + "/metrics", timeout=10).text

    def value(metric: str, name: str) -> float:
        found = re.search(rf'^{metric}{{name="{name}"}} ([0-9.e+]+)$', text, re.M)
        assert found, (metric, name)
        return float(found.group(1))

    assert value("homeserver_cache_capacity", "events") == 246  # 123, doubled
    assert value("homeserver_cache_capacity", "state_groups") == 400_000  # state entries
    # Weighed by entries: the creation's states of 1, 2, ... 5+ entries weigh 15 or more
    # (counted as states they would be 7 at most).
    assert 15 <= value("homeserver_cache_size", "state_groups") <= 400_000
    assert 0 < value("homeserver_cache_size", "events") <= 246
    assert value("homeserver_cache_hits_total", "events") > 0
    assert value("homeserver_memory_table_size", "room_locks") == 0  # dropped when free
    assert value("homeserver_memory_table_size", "unwritten_room_events") == 0
    assert value("homeserver_memory_table_size", "typing_rooms") == 0
