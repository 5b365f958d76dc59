"""The command line: ``-c FILE`` runs the server, ``--generate-config`` writes one."""

from __future__ import annotations

import argparse
import os
import sys

import yaml

from config import ConfigError, load_config
from config.generate import generate_config_text
from config.load import parse_config
from crypto.signing_keys import ensure_signing_key


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="homeserver", description="A Matrix homeserver on Twisted."
    )
    parser.add_argument("-c", "--config-path", required=True, help="the YAML configuration file")
    parser.add_argument(
        "--generate-config",
        action="store_true",
        help="write a commented configuration (and a signing key beside it) and exit",
    )
    parser.add_argument("--server-name", help="with --generate-config: the server's domain")
    parser.add_argument(
        "--enable-registration",
        action="store_true",
        help="with --generate-config: let anyone register (for a local test server)",
    )
    parser.add_argument(
        "--port", type=int, default=8008, help="with --generate-config: the client port"
    )
    parser.add_argument(
        "--public-baseurl",
        help="with --generate-config: the URL clients reach this server at (advertised to them)",
    )
    return parser


def generate(
    config_path: str,
    server_name: str,
    port: int,
    enable_registration: bool,
    public_baseurl: str | None = None,
) -> int:
    directory = os.path.dirname(os.path.abspath(config_path))
    key_name = f"{server_name.replace(':', '_').replace('/', '_')}.signing.key"
    text = generate_config_text(
        server_name=server_name,
        signing_key_path=key_name,
        port=port,
        registration_enabled=enable_registration,
        public_baseurl=public_baseurl,
    )
    try:
        parse_config(yaml.safe_load(text), directory)
    except ConfigError as e:
        print(f"Cannot generate a config: {e}", file=sys.stderr)
        return 1
    os.makedirs(directory, exist_ok=True)
    key_path = os.path.join(directory, key_name)
    if ensure_signing_key(key_path):
        print(f"Wrote a new signing key to {key_path}")
    else:
        print(f"Kept the existing signing key at {key_path}")
    if os.path.exists(config_path):
        print(f"{config_path} already exists; not overwriting it")
        return 0
    fd = os.open(config_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    print(f"Wrote {config_path}; edit it, then run: homeserver -c {config_path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.generate_config:
        if not args.server_name:
            print("--generate-config needs --server-name NAME", file=sys.stderr)
            return 2
        return generate(
            args.config_path,
            args.server_name,
            args.port,
            args.enable_registration,
            args.public_baseurl,
        )
    try:
        config = load_config(args.config_path)
    except ConfigError as e:
        print(f"{args.config_path}: {e}", file=sys.stderr)
        return 1
    from homeserver.app import run

    return run(config)


if __name__ == "__main__":
    sys.exit(main())
