"""Create an account from the shell, with the shared secret from the server's config.

    homeserver-register-user -c homeserver.yaml -u alice [-p PASSWORD] [--admin]

Talks to the running server over the shared-secret registration API, so it works the
same against a local or a remote server (``--url``).
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
import urllib.error
import urllib.request
from typing import Any

from config import ConfigError, load_config
from crypto.shared_secret import registration_mac


def _call(url: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        url,
        data=data,
        headers={"Content-Type": "application/json"},
        method="POST" if data else "GET",
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            result: dict[str, Any] = json.load(response)
            return result
    except urllib.error.HTTPError as e:
        try:
            error = json.load(e)
            message = f"{error.get('errcode')}: {error.get('error')}"
        except ValueError:
            message = str(e)
        raise SystemExit(f"Registration failed ({e.code}): {message}") from None
    except urllib.error.URLError as e:
        raise SystemExit(f"Cannot reach the homeserver at {url}: {e.reason}") from None


def register_user(url: str, secret: str, user: str, password: str, admin: bool) -> dict[str, Any]:
    endpoint = url.rstrip("/") + "/_synapse/admin/v1/register"
    nonce = _call(endpoint)["nonce"]
    return _call(
        endpoint,
        {
            "nonce": nonce,
            "username": user,
            "password": password,
            "admin": admin,
            "mac": registration_mac(secret, nonce, user, password, admin),
        },
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Create a user on a running homeserver.")
    parser.add_argument("-c", "--config", required=True, help="the server's YAML config")
    parser.add_argument("-u", "--user", required=True, help="the localpart of the new user")
    parser.add_argument("-p", "--password", help="the password (asked for when omitted)")
    parser.add_argument("-a", "--admin", action="store_true", help="make the user a server admin")
    parser.add_argument("--url", help="the server's base URL (default: its first listener)")
    args = parser.parse_args(argv)

    try:
        config = load_config(args.config)
    except ConfigError as e:
        print(e, file=sys.stderr)
        return 1
    secret = config.registration.shared_secret
    if not secret:
        print("registration.shared_secret is not set in the config", file=sys.stderr)
        return 1
    url = args.url
    if url is None:
        listener = next(li for li in config.listeners if "admin" in li.resources)
        host = listener.bind_addresses[0]
        scheme = "https" if listener.tls else "http"
        url = f"{scheme}://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{listener.port}"
    password = args.password
    if password is None:
        password = getpass.getpass("Password: ")
        if password != getpass.getpass("Confirm password: "):
            print("Passwords do not match", file=sys.stderr)
            return 1
    result = register_user(url, secret, args.user, password, args.admin)
    print(f"Created {result['user_id']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
