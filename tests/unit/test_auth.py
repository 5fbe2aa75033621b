"""Bearer keys (serve_app/web/auth.py): FACEGRAPH_API_KEY, or a key generated once into
the data dir (0600, one key however many replicas start together); 401 in the error
shape otherwise; the key itself never logged."""

from __future__ import annotations

import logging
import threading

import pytest

from serve_app import errors
from serve_app.web import auth


@pytest.fixture
def fresh(monkeypatch, tmp_path):
    monkeypatch.delenv(auth.KEY_ENV, raising=False)
    monkeypatch.setenv("FACEGRAPH_DATA_DIR", str(tmp_path / "data"))
    auth.reset()
    yield tmp_path / "data"
    auth.reset()


def refused(header) -> errors.ApiError:
    with pytest.raises(errors.ApiError) as caught:
        auth.authorize(header)
    return caught.value


def test_key_from_the_environment(fresh, monkeypatch):
    monkeypatch.setenv(auth.KEY_ENV, "s3cret-key")
    caller = auth.authorize("Bearer s3cret-key")
    assert caller.startswith("key:") and "s3cret" not in caller
    assert auth.authorize("bearer   s3cret-key ") == caller  # scheme in any case, spaces around the key
    for header in (None, "", "Bearer", "Bearer ", "Basic czNjcmV0LWtleQ==", "Bearer s3cret-key2", "s3cret-key"):
        error = refused(header)
        assert (error.status, error.code, error.headers) == (401, "unauthorized", {"WWW-Authenticate": "Bearer"})
    assert not (fresh / auth.KEY_FILE).exists()  # no file when the environment gives the key


def test_generated_key_file_is_private_and_logged_by_path_only(fresh, caplog):
    with caplog.at_level(logging.INFO, logger="facegraph.auth"):
        auth.expected_digest()
    path = fresh / auth.KEY_FILE
    key = path.read_text().strip()
    assert len(key) >= 32 and path.stat().st_mode & 0o777 == 0o600
    assert fresh.stat().st_mode & 0o777 == 0o700
    assert str(path) in caplog.text and key not in caplog.text
    auth.authorize(f"Bearer {key}")
    assert refused("Bearer " + key[:-1]).status == 401
    # A restart reads the same key.
    auth.reset()
    auth.authorize(f"Bearer {key}")


def test_replicas_starting_together_share_one_key(fresh):
    keys, start = [], threading.Barrier(8)

    def replica():
        start.wait()
        keys.append(auth._load_or_create(fresh / auth.KEY_FILE))

    threads = [threading.Thread(target=replica) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(keys)) == 1 and keys[0]
    assert [p.name for p in fresh.iterdir()] == [auth.KEY_FILE]  # no staging file left behind
