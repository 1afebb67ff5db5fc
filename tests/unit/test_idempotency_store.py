"""The idempotency store on its own: claims, replays, conflicts, release and purge."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from vimkit.api.problems import ApiError
from vimkit.store.db import Database
from vimkit.store.idempotency import IdempotencyStore, StoredResponse
from vimkit.store.migrate import upgrade


@pytest.fixture
def store(tmp_path: Path) -> IdempotencyStore:
    database = Database(f"sqlite:///{tmp_path / 'db.sqlite'}")
    upgrade(database)
    return IdempotencyStore(database, timedelta(hours=24))


def test_claim_finish_replay(store: IdempotencyStore) -> None:
    assert store.claim("c1", "k", "h1") is None
    with pytest.raises(ApiError) as in_flight:
        store.claim("c1", "k", "h1")
    assert in_flight.value.status == 409 and in_flight.value.headers["Retry-After"] == "1"
    store.finish("c1", "k", StoredResponse(201, [["etag", '"x"']], b"{}"))
    replay = store.claim("c1", "k", "h1")
    assert replay == StoredResponse(201, [["etag", '"x"']], b"{}")
    with pytest.raises(ApiError) as different:
        store.claim("c1", "k", "h2")
    assert different.value.status == 422
    assert store.claim("c2", "k", "h2") is None  # keys are per consumer


def test_release_lets_a_retry_run_again(store: IdempotencyStore) -> None:
    assert store.claim("c1", "k", "h") is None
    store.release("c1", "k")
    assert store.claim("c1", "k", "h") is None


def test_purge_forgets_old_keys(store: IdempotencyStore) -> None:
    store.claim("c1", "old", "h")
    store.finish("c1", "old", StoredResponse(200, [], b""))
    store.ttl = timedelta(seconds=-1)
    assert store.purge() == 1
    assert store.claim("c1", "old", "other-hash") is None
