"""One-time keys on PostgreSQL: a key another upload from the same device stored first is
a no-op when it is the same key and a conflict when it is not, never a silently dropped
key; claims batched into one transaction (group commit) each take their own key, even of
one device while another transaction holds a key locked, then the fallback."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

from homeserver.storage.e2ee import OneTimeKeyConflict, _claim_batch_txn, add_one_time_keys_txn
from homeserver.storage.engine import PostgresEngine, Txn
from tests.conftest import _require_db
from tests.harness import migrated_pg_engine

USER, DEVICE, ALG = "@u:example.org", "DEV", "signed_curve25519"


@pytest.fixture
def pg() -> Iterator[PostgresEngine]:
    _require_db("postgres")
    with migrated_pg_engine() as engine:
        yield engine


def connect(engine: PostgresEngine) -> Any:
    import psycopg2

    conn = psycopg2.connect(**engine.connection_kwargs())
    engine.on_new_connection(conn)
    return conn


def upload_while_another_commits(engine: PostgresEngine, theirs: str, ours: str) -> Any:
    """Another upload has stored ``theirs`` under key K1 but not committed; ours (K1 with
    ``ours``, and K2) looks, finds nothing, and waits on the insert until the other commits.
    Returns what our upload raised (None if nothing) and what the table holds after."""
    other, mine = connect(engine), connect(engine)
    other.autocommit = False
    other.cursor().execute(
        "INSERT INTO one_time_keys (user_id, device_id, algorithm, key_id, key_json, seq) "
        "VALUES (%s, %s, %s, 'K1', %s, 1)",
        (USER, DEVICE, ALG, theirs),
    )
    outcome: list[BaseException | None] = []

    def upload() -> None:
        txn = Txn(mine.cursor(), engine)
        try:
            add_one_time_keys_txn(txn, USER, DEVICE, [(ALG, "K1", ours), (ALG, "K2", "{}")], 10)
            txn.flush()
            mine.commit()
            outcome.append(None)
        except OneTimeKeyConflict as e:
            mine.rollback()
            outcome.append(e)

    worker = threading.Thread(target=upload)
    worker.start()
    worker.join(0.5)
    assert worker.is_alive(), "our insert should wait for the other upload's transaction"
    other.commit()
    worker.join(10)
    cursor = other.cursor()
    cursor.execute("SELECT key_id, key_json FROM one_time_keys ORDER BY key_id")
    rows = cursor.fetchall()
    other.close()
    mine.close()
    return outcome[0], rows


def test_a_different_key_stored_first_by_a_racing_upload_is_a_conflict(pg: PostgresEngine) -> None:
    raised, rows = upload_while_another_commits(pg, '{"key": "theirs"}', '{"key": "ours"}')
    assert isinstance(raised, OneTimeKeyConflict)
    assert rows == [("K1", '{"key": "theirs"}')]  # nothing of our batch kept


def test_the_same_key_stored_first_by_a_racing_upload_is_a_no_op(pg: PostgresEngine) -> None:
    raised, rows = upload_while_another_commits(pg, '{"key": "same"}', '{"key":"same"}')
    assert raised is None
    assert rows == [("K1", '{"key": "same"}'), ("K2", "{}")]


def test_claims_sharing_a_transaction_each_take_their_own_key(pg: PostgresEngine) -> None:
    setup, locker, mine = connect(pg), connect(pg), connect(pg)
    cursor = setup.cursor()
    for seq, key_id in enumerate(["K1", "K2", "K3"], start=1):
        cursor.execute(
            "INSERT INTO one_time_keys (user_id, device_id, algorithm, key_id, key_json, seq) "
            "VALUES (%s, %s, %s, %s, %s, %s)",
            (USER, DEVICE, ALG, key_id, f'{{"key": "{key_id}"}}', seq),
        )
    cursor.execute(
        "INSERT INTO fallback_keys (user_id, device_id, algorithm, key_id, key_json, used) "
        "VALUES (%s, %s, %s, 'F', '{\"key\": \"F\"}', 0)",
        (USER, DEVICE, ALG),
    )
    setup.commit()
    # Another claim's transaction holds K1.
    locker.autocommit = False
    locker.cursor().execute("SELECT 1 FROM one_time_keys WHERE key_id = 'K1' FOR UPDATE")
    txn = Txn(mine.cursor(), pg)
    wanted = [(USER, DEVICE, ALG)]
    claimed = _claim_batch_txn(txn, [wanted, wanted, wanted])
    txn.flush()
    mine.commit()
    locker.rollback()
    assert [c[(USER, DEVICE)] for c in claimed] == [
        (f"{ALG}:K2", {"key": "K2"}), (f"{ALG}:K3", {"key": "K3"}), (f"{ALG}:F", {"key": "F"}),
    ]  # fmt: skip
    cursor.execute("SELECT key_id FROM one_time_keys")
    assert cursor.fetchall() == [("K1",)]
    for conn in (setup, locker, mine):
        conn.close()
