"""Export one user's data into a zip file, from the server's own database.

    homeserver-export-user -c homeserver.yaml @alice:example.org /path/to/dir

Writes DIR/export-<localpart>-<time>.zip (see README.txt inside for the format) and prints
its path. Safe to run while the server runs: it only reads.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

from twisted.internet import defer

from config import ConfigError, load_config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-c", "--config-path", required=True, help="the server's YAML file")
    parser.add_argument("user_id", help="the user to export, e.g. @alice:example.org")
    parser.add_argument("directory", help="where to write the zip file")
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config_path)
    except ConfigError as e:
        print(f"homeserver-export-user: {e}", file=sys.stderr)
        return 2
    localpart = args.user_id.lstrip("@").split(":")[0]
    name = f"export-{localpart}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}.zip"
    path = os.path.join(os.path.abspath(args.directory), name)
    from twisted.internet import reactor as _reactor

    reactor: Any = _reactor
    outcome = {"code": 1}

    async def run() -> None:
        from homeserver.app import open_homeserver

        hs = await open_homeserver(config, reactor)
        try:
            if await hs.stores.users.get_user(args.user_id) is None:
                print(f"homeserver-export-user: no user {args.user_id} here", file=sys.stderr)
                return
            await hs.exports.exporter.export(args.user_id, path)
            print(path)
            outcome["code"] = 0
        finally:
            hs.db.close()

    def go() -> None:
        d = defer.ensureDeferred(run())
        d.addErrback(lambda f: print(f"homeserver-export-user: {f.getErrorMessage()}",
                                     file=sys.stderr))  # fmt: skip
        d.addBoth(lambda _: reactor.stop())

    reactor.callWhenRunning(go)
    reactor.run()
    return outcome["code"]


if __name__ == "__main__":
    sys.exit(main())
