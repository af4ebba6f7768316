"""Per-service API keys: the keys file, its keyed hashes, and who a request's key names.

A keys file is JSON, written only by `python -m serve keys` (serve.auth.cli):

    {"format": "medgemma-serve service keys 1", "salt": "<64 hex>",
     "services": [{"name": "ris", "key_hmac_sha256": "<64 hex>", "requests_per_minute": 60,
                   "tokens_per_minute": null, "created": "2026-12-07T02:30:00Z",
                   "revoked": null}]}

A key is 256 random bits (`new_key`); the file holds HMAC-SHA256(salt, key) only, so the
file reveals no key, and one hash per request finds the service (`identify`). A revoked
entry stays in the file: its key is then told apart from an unknown one (403, not 401),
and its name may be given a new key. Everything here is pure but `read_keys_file` and
`write_keys_file` (atomic, mode 0600).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import secrets
import stat
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

FORMAT = "medgemma-serve service keys 1"
KEY_PREFIX = "mgs-"
NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}")
HEX64 = re.compile(r"[0-9a-f]{64}")
# An Authorization header longer than this is refused before any hashing (a key is ~50).
MAX_AUTHORIZATION_BYTES = 1024
# The service name of the deployment's single `api_key_env` key, accepted beside the keys
# file; not a valid NAME, so no entry of a keys file can take it.
SINGLE_KEY_SERVICE = "(api_key_env)"


class KeysFileError(ValueError):
    """A keys file that cannot be used; the message is one line naming the file."""


@dataclass(frozen=True)
class Service:
    """One entry of a keys file: a calling service, the hash of its key, its limits."""

    name: str
    key_hash: str  # hex HMAC-SHA256(salt, key)
    requests_per_minute: int | None = None  # None: unlimited
    tokens_per_minute: int | None = None
    created: str = ""
    revoked: str | None = None  # when, or None while the key is valid


@dataclass(frozen=True)
class KeysTable:
    """A keys file's content."""

    salt: str = field(default_factory=lambda: secrets.token_hex(32))
    services: tuple[Service, ...] = ()

    def by_hash(self) -> dict[str, Service]:
        return {s.key_hash: s for s in self.services}

    def active(self, name: str) -> Service | None:
        return next((s for s in self.services if s.name == name and s.revoked is None), None)


def new_key() -> str:
    """A fresh random key: 256 bits, URL-safe, with a prefix secret scanners can match."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(salt: str, key: str) -> str:
    return hmac.new(bytes.fromhex(salt), key.encode(), hashlib.sha256).hexdigest()


def add_service(
    table: KeysTable,
    name: str,
    key: str,
    now: str,
    requests_per_minute: int | None = None,
    tokens_per_minute: int | None = None,
) -> KeysTable:
    """`table` with a new service. Raises KeysFileError for a bad name or a name that
    already has a valid key (revoke it first)."""
    if not NAME.fullmatch(name):
        raise KeysFileError(
            f"{name!r} is not a service name: lower-case letters, digits, '.', '_' and '-', "
            "starting with a letter or digit, at most 63 characters"
        )
    if table.active(name) is not None:
        raise KeysFileError(
            f"service {name!r} already has a key; revoke it first (`python -m serve keys "
            "revoke`) or choose another name"
        )
    for what, value in (("requests", requests_per_minute), ("tokens", tokens_per_minute)):
        if value is not None and value < 1:
            raise KeysFileError(f"--{what}-per-minute must be at least 1 (got {value})")
    entry = Service(
        name, hash_key(table.salt, key), requests_per_minute, tokens_per_minute, now, None
    )
    return replace(table, services=(*table.services, entry))


def revoke_service(table: KeysTable, name: str, now: str) -> KeysTable:
    """`table` with `name`'s valid key revoked. Raises KeysFileError if it has none."""
    if table.active(name) is None:
        known = sorted({s.name for s in table.services if s.revoked is None})
        raise KeysFileError(
            f"no service {name!r} with a valid key (services: {', '.join(known) or 'none'})"
        )
    services = tuple(
        replace(s, revoked=now) if s.name == name and s.revoked is None else s
        for s in table.services
    )
    return replace(table, services=services)


def to_json(table: KeysTable) -> str:
    services = [
        {
            "name": s.name,
            "key_hmac_sha256": s.key_hash,
            "requests_per_minute": s.requests_per_minute,
            "tokens_per_minute": s.tokens_per_minute,
            "created": s.created,
            "revoked": s.revoked,
        }
        for s in table.services
    ]
    doc = {"format": FORMAT, "salt": table.salt, "services": services}
    return json.dumps(doc, indent=2) + "\n"


def limit_value(entry: dict[str, Any], key: str, where: str) -> int | None:
    value = entry.get(key)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise KeysFileError(f"{where}.{key}: {value!r} is not a whole number of at least 1")
    return value


def from_json(text: str) -> KeysTable:
    """Parse a keys file's text. Raises KeysFileError (one line, no key material)."""
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise KeysFileError(f"not JSON ({exc})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise KeysFileError(f'not a keys file (no "format": "{FORMAT}")')
    salt = doc.get("salt")
    if not isinstance(salt, str) or not HEX64.fullmatch(salt):
        raise KeysFileError("salt: not 64 hex digits")
    entries = doc.get("services")
    if not isinstance(entries, list):
        raise KeysFileError("services: not a list")
    services, active = [], set()
    for i, entry in enumerate(entries):
        where = f"services[{i}]"
        if not isinstance(entry, dict):
            raise KeysFileError(f"{where}: not an object")
        name, key_hash = entry.get("name"), entry.get("key_hmac_sha256")
        if not isinstance(name, str) or not NAME.fullmatch(name):
            raise KeysFileError(f"{where}.name: {name!r} is not a service name")
        if not isinstance(key_hash, str) or not HEX64.fullmatch(key_hash):
            raise KeysFileError(f"{where}.key_hmac_sha256: not 64 hex digits")
        revoked = entry.get("revoked")
        if revoked is None:
            if name in active:
                raise KeysFileError(f"{where}.name: {name!r} has two valid keys")
            active.add(name)
        services.append(
            Service(
                name,
                key_hash,
                limit_value(entry, "requests_per_minute", where),
                limit_value(entry, "tokens_per_minute", where),
                str(entry.get("created") or ""),
                None if revoked is None else str(revoked),
            )
        )
    return KeysTable(salt, tuple(services))


@dataclass(frozen=True)
class Verdict:
    """Who a request is, or why it is refused: `status` 0 with `service` set, else the
    HTTP status (401 no or unknown key, 403 revoked key, 431 header too long) and a
    message that names the problem (never the key)."""

    status: int
    message: str = ""
    service: str | None = None


BEARER_HINT = "send `Authorization: Bearer KEY`"


def bearer_token(value: bytes | None) -> Verdict | str:
    """The key of an Authorization header value, or the Verdict refusing it."""
    if value is None:
        return Verdict(401, f"no API key: {BEARER_HINT}")
    if len(value) > MAX_AUTHORIZATION_BYTES:
        return Verdict(
            431,
            f"the Authorization header has {len(value)} bytes; at most "
            f"{MAX_AUTHORIZATION_BYTES} are read: {BEARER_HINT}",
        )
    scheme, _, token = value.decode("latin-1").strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return Verdict(401, f"the Authorization header is not a bearer key: {BEARER_HINT}")
    return token.strip()


def identify(
    table: KeysTable, authorization: bytes | None, single_key_hash: bytes | None = None
) -> Verdict:
    """Which service an Authorization header names (pure). `single_key_hash`: sha256 of
    the deployment's one `api_key_env` key, accepted alongside as SINGLE_KEY_SERVICE."""
    token = bearer_token(authorization)
    if isinstance(token, Verdict):
        return token
    if single_key_hash is not None and hmac.compare_digest(
        hashlib.sha256(token.encode()).digest(), single_key_hash
    ):
        return Verdict(0, service=SINGLE_KEY_SERVICE)
    entry = table.by_hash().get(hash_key(table.salt, token))
    if entry is None:
        return Verdict(401, f"unknown API key: {BEARER_HINT} with a key this server issued")
    if entry.revoked is not None:
        return Verdict(403, f"this key (service {entry.name!r}) was revoked", entry.name)
    return Verdict(0, service=entry.name)


def file_problem(mode: int) -> str | None:
    """Why a keys file with this st_mode must not be used (pure), or None."""
    if not stat.S_ISREG(mode):
        return "is not a regular file"
    if mode & 0o077:
        return (
            f"is readable or writable by other users (mode {stat.S_IMODE(mode):04o}): chmod 600 it"
        )
    return None


def read_keys_file(path: Path) -> KeysTable:
    """Read and check a keys file. Raises KeysFileError: '<path>: <problem>'."""
    try:
        st = path.stat()
        problem = file_problem(st.st_mode)
        if problem:
            raise KeysFileError(f"{path}: {problem}")
        return from_json(path.read_text())
    except FileNotFoundError:
        raise KeysFileError(
            f"{path}: no such keys file (create it: python -m serve keys add NAME "
            f"--keys-file {path})"
        ) from None
    except OSError as exc:
        raise KeysFileError(f"{path}: cannot be read ({exc.strerror})") from None
    except KeysFileError as exc:
        if str(exc).startswith(f"{path}: "):
            raise
        raise KeysFileError(f"{path}: {exc}") from None


def write_keys_file(path: Path, table: KeysTable) -> None:
    """Replace `path` atomically with `table`, mode 0600 from the first byte."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)  # mode 0600
    try:
        with os.fdopen(fd, "w") as f:
            f.write(to_json(table))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
