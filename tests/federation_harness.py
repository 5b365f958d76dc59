"""Several of our servers federating over loopback TLS, with a CA the test makes itself.

Each server is named ``localhost:<port>`` after its federation listener, so discovery takes
the spec's "explicit port" step and the certificate is checked for ``localhost``.
"""

from __future__ import annotations

import datetime
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.harness import Client, ServerProcess, free_port, make_server


@dataclass(frozen=True)
class FederationCA:
    ca_path: str
    cert_path: str
    key_path: str


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def make_test_ca(directory: str | None = None) -> FederationCA:
    """A throw-away CA and one certificate for ``localhost`` / 127.0.0.1 signed by it."""
    import ipaddress

    directory = directory or tempfile.mkdtemp(prefix="hs-ca-")
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(_name("homeserver test CA"))
        .issuer_name(_name("homeserver test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("localhost"))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), False)
        .sign(ca_key, hashes.SHA256())
    )
    paths = FederationCA(
        os.path.join(directory, "ca.pem"),
        os.path.join(directory, "localhost.pem"),
        os.path.join(directory, "localhost.key"),
    )
    with open(paths.ca_path, "wb") as f:
        f.write(ca_cert.public_bytes(serialization.Encoding.PEM))
    with open(paths.cert_path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(paths.key_path, "wb") as f:
        f.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    return paths


def make_federating_server(
    db_kind: str, ca: FederationCA, overrides: dict[str, Any] | None = None
) -> ServerProcess:
    """A server whose federation listener speaks TLS with the test CA's certificate and
    which trusts that CA for its own outbound requests."""
    port, federation_port, metrics_port = free_port(), free_port(), free_port()
    server_name = f"localhost:{federation_port}"
    config: dict[str, Any] = {
        "server_name": server_name,
        "public_baseurl": f"http://127.0.0.1:{port}/",
        "listeners": [
            {"port": port, "bind_addresses": ["127.0.0.1"],
             "resources": ["client", "media", "admin"]},
            {"port": federation_port, "bind_addresses": ["127.0.0.1"], "tls": True,
             "tls_certificate_path": ca.cert_path, "tls_private_key_path": ca.key_path,
             "resources": ["federation"]},
            {"port": metrics_port, "bind_addresses": ["127.0.0.1"], "resources": ["metrics"]},
        ],
        # Loopback is where the test's servers are: let them reach it.
        "federation": {"ca_file": ca.ca_path, "ip_range_blacklist": []},
    }  # fmt: skip
    for key, value in (overrides or {}).items():
        if isinstance(value, dict) and isinstance(config.get(key), dict):
            config[key] = {**config[key], **value}
        else:
            config[key] = value
    server = make_server(db_kind, config)
    server.server_name = server_name
    server.base_url = f"http://127.0.0.1:{port}"
    server._extra["federation_url"] = f"https://localhost:{federation_port}"
    return server


def wait_until(check: Callable[[], Any], timeout: float = 15, what: str = "condition") -> Any:
    """Poll ``check`` until it returns something truthy; fail with ``what`` otherwise."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")


def room_messages(client: Client, room_id: str) -> list[dict[str, Any]]:
    from tests.harness import q

    resp = client.get(f"rooms/{q(room_id)}/messages", params={"dir": "b", "limit": "50"})
    assert resp.status == 200, resp
    return list(reversed(resp.body["chunk"]))


def bodies_in(client: Client, room_id: str) -> list[str]:
    return [
        e["content"].get("body")
        for e in room_messages(client, room_id)
        if e["type"] == "m.room.message"
    ]
