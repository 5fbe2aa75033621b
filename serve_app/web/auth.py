"""Bearer keys for the routes that touch biometric data (/v1/people, match_people).

The key is FACEGRAPH_API_KEY; when that is unset, one is generated on first start into
`<data dir>/api_key` (mode 0600, the data dir of the gallery's SQLite store) and its
path is logged, never the key. Every replica on the machine reads the same file; on a
cluster, set FACEGRAPH_API_KEY from a secret (each pod would otherwise make its own).

Keys are compared in constant time (hmac.compare_digest over their SHA-256 digests, so
neither the content nor the length of the right key leaks through timing). What the
audit log records of a caller is the key's fingerprint, never the key.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
import threading
from pathlib import Path

from deployments.face_gallery.store import data_dir
from serve_app import errors

log = logging.getLogger("facegraph.auth")
KEY_ENV = "FACEGRAPH_API_KEY"
KEY_FILE = "api_key"
_lock = threading.Lock()
_digest: bytes | None = None


def key_file() -> Path:
    return Path(data_dir(None)) / KEY_FILE


def _load_or_create(path: Path) -> str:
    """The key in `path`, made there first if absent. Replicas starting together: the
    key is written to a private temporary file and linked into place, so exactly one
    wins and nobody ever reads a half-written key."""
    try:
        return path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    staging = path.with_name(f".{KEY_FILE}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(secrets.token_urlsafe(32) + "\n")
        try:
            os.link(staging, path)
            log.warning("no %s set: generated an API key into %s (mode 0600)", KEY_ENV, path)
        except FileExistsError:
            pass  # another replica's key won
    finally:
        staging.unlink(missing_ok=True)
    return path.read_text(encoding="utf-8").strip()


def expected_digest() -> bytes:
    """SHA-256 of the key in force (read once per process)."""
    global _digest
    with _lock:
        if _digest is None:
            key = os.environ.get(KEY_ENV, "").strip()
            if not key:
                path = key_file()
                key = _load_or_create(path)
                log.info("API key from %s", path)
            if not key:
                raise RuntimeError(f"the API key file {key_file()} is empty")
            _digest = hashlib.sha256(key.encode()).digest()
        return _digest


def reset() -> None:
    """Forget the key read (tests change FACEGRAPH_API_KEY)."""
    global _digest
    with _lock:
        _digest = None


def fingerprint(digest: bytes) -> str:
    """Who a key is, for the audit log: a prefix of its digest (not enough to guess it)."""
    return "key:" + digest.hex()[:12]


def unauthorized(message: str) -> errors.ApiError:
    return errors.ApiError(401, "unauthorized", message, headers={"WWW-Authenticate": "Bearer"})


def authorize(header: str | None) -> str:
    """The Authorization header's Bearer key checked -> the caller's fingerprint; 401 otherwise."""
    scheme, _, given = (header or "").strip().partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        raise unauthorized("this route needs Authorization: Bearer <key>")
    digest = hashlib.sha256(given.strip().encode()).digest()
    if not hmac.compare_digest(digest, expected_digest()):
        raise unauthorized("the API key is not valid")
    return fingerprint(digest)
