"""Restore an encrypted key backup with only the recovery key, into a key-export file.

    homeserver-restore-keys --url https://matrix.example.org --user alice \\
        --recovery-key "EsTc LW2K ..." --out keys.txt

Asks for the account password, the recovery key (when not given) and a passphrase to
protect the export file, which Element (Settings > Security > Import E2E room keys) or any
client can import. Nothing is decrypted on the server: the keys are opened here.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys

from keybackup.client_crypto import RecoveryKeyError, export_sessions
from keybackup.restore import HomeserverClient, RestoreError, restore


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True, help="the homeserver's base URL")
    parser.add_argument("--user", required=True, help="your user ID or localpart")
    parser.add_argument("--password", help="your account password (asked when omitted)")
    parser.add_argument("--access-token", help="use this session instead of logging in")
    key = parser.add_mutually_exclusive_group()
    key.add_argument("--recovery-key", help="the recovery (security) key, or a backup key")
    key.add_argument("--passphrase", help="the security phrase instead of the key")
    parser.add_argument("--out", required=True, help="where to write the key-export file")
    parser.add_argument("--export-passphrase", help="protects the export file (asked)")
    args = parser.parse_args(argv)

    client = HomeserverClient(args.url, args.access_token)
    try:
        user_id = args.user
        if args.access_token is None:
            password = args.password or getpass.getpass("Account password: ")
            client.login(args.user, password)
            user_id = client.user_id
        recovery_key = args.recovery_key
        if recovery_key is None and args.passphrase is None:
            recovery_key = getpass.getpass("Recovery key: ")
        result = restore(client, user_id, recovery_key, args.passphrase)
    except RecoveryKeyError as e:
        print(f"Wrong key: {e}. Nothing was downloaded.", file=sys.stderr)
        return 2
    except RestoreError as e:
        print(f"Restore failed: {e}", file=sys.stderr)
        return 1

    export_passphrase = args.export_passphrase or getpass.getpass("Passphrase for the export: ")
    fd = os.open(args.out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(export_sessions(result.sessions, export_passphrase))
    print(f"Restored {len(result.sessions)} sessions from backup version {result.version}.")
    for room_id, session_id, reason in result.failed:
        print(f"Could not decrypt session {session_id} in {room_id}: {reason}", file=sys.stderr)
    return 0 if not result.failed else 3


if __name__ == "__main__":
    sys.exit(main())
