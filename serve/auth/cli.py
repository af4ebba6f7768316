"""`python -m serve keys add|list|revoke`: the per-service API keys of a keys file.

python -m serve keys add NAME --keys-file PATH [--requests-per-minute N] [--tokens-per-minute N]
python -m serve keys list --keys-file PATH
python -m serve keys revoke NAME --keys-file PATH

`add` prints the new key once, as the last line of stdout; the file keeps only its keyed
hash (serve.auth.keys). A running server reads the change within about a second.
"""

from __future__ import annotations

import argparse
import datetime
import sys
from pathlib import Path

from serve.auth.keys import (
    KeysFileError,
    KeysTable,
    add_service,
    new_key,
    read_keys_file,
    revoke_service,
    write_keys_file,
)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m serve keys",
        description="Per-service API keys of a deployment (its config's auth.keys_file).",
    )
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    add = sub.add_parser("add", help="give a service a new key (printed once)")
    add.add_argument("name", help="the calling service, e.g. ris or pacs-bridge")
    add.add_argument("--requests-per-minute", type=int, metavar="N", help="default: unlimited")
    add.add_argument("--tokens-per-minute", type=int, metavar="N", help="default: unlimited")
    listing = sub.add_parser("list", help="the services, their limits and state")
    revoke = sub.add_parser("revoke", help="revoke a service's key (403 from then on)")
    revoke.add_argument("name")
    for s in (add, listing, revoke):
        s.add_argument("--keys-file", type=Path, required=True, metavar="PATH")
    return p


def utc_now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def load(path: Path, create: bool) -> KeysTable:
    if create and not path.exists():
        return KeysTable()
    return read_keys_file(path)


def limit(value: int | None) -> str:
    return "unlimited" if value is None else str(value)


def listing(table: KeysTable) -> str:
    rows = [("service", "state", "requests/min", "tokens/min", "created", "revoked")]
    for s in table.services:
        state = "valid" if s.revoked is None else "revoked"
        rows.append(
            (
                s.name,
                state,
                limit(s.requests_per_minute),
                limit(s.tokens_per_minute),
                s.created,
                s.revoked or "-",
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    path: Path = args.keys_file.expanduser()
    try:
        if args.action == "list":
            print(listing(load(path, create=False)))
            return 0
        table = load(path, create=args.action == "add")
        if args.action == "revoke":
            write_keys_file(path, revoke_service(table, args.name, utc_now()))
            print(
                f"revoked the key of service {args.name!r} in {path}; running servers refuse "
                "it (403) within about a second",
                file=sys.stderr,
            )
            return 0
        key = new_key()
        table = add_service(
            table, args.name, key, utc_now(), args.requests_per_minute, args.tokens_per_minute
        )
        write_keys_file(path, table)
    except KeysFileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(
        f"added service {args.name!r} to {path} (requests per minute: "
        f"{limit(args.requests_per_minute)}, tokens per minute: "
        f"{limit(args.tokens_per_minute)}). Its key follows, shown this once (the file "
        "keeps only a hash): the service sends `Authorization: Bearer KEY`.",
        file=sys.stderr,
    )
    print(key, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
