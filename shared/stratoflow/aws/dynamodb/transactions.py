"""Conditional writes and transactions: a failed condition becomes a value, not an exception.

ConditionalCheckFailed and TransactionCanceled are translated here; conflicts with
concurrent transactions and throttling are retried with a jittered backoff.
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from typing import Any

from botocore.exceptions import ClientError

TRANSACTION_LIMIT = 100
"""Items per TransactWriteItems call (DynamoDB's limit since 2022)."""
_RETRYABLE_TX = {"TransactionConflict", "ThrottlingError", "ProvisionedThroughputExceeded"}


def _applied(write: Any, **request: Any) -> bool:
    """Make a conditional write; False (not an exception) when its condition failed."""
    try:
        write(**request)
    except ClientError as err:
        if _code(err) == "ConditionalCheckFailedException":
            return False
        raise
    return True


def _code(err: ClientError) -> str:
    return str(err.response.get("Error", {}).get("Code", ""))


def _transact(db: Any, items: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Run a transaction; None if it applied, else the first item's cancellation reason
    when that item's condition failed. Conflicts with concurrent transactions retry."""
    reasons = _transact_reasons(db, items)
    if reasons is None:
        return None
    if reasons[0].get("Code") == "ConditionalCheckFailed":
        return reasons[0]
    raise RuntimeError(f"transaction cancelled: {reasons}")


def _transact_reasons(db: Any, items: list[dict[str, Any]]) -> list[dict[str, Any]] | None:
    """Run a transaction; None if it applied, else every item's cancellation reason
    when a condition failed. Conflicts with concurrent transactions retry."""
    attempt = 0
    while True:
        try:
            db.transact_write_items(TransactItems=items)
            return None
        except ClientError as err:
            if _code(err) != "TransactionCanceledException":
                raise
            reasons = err.response.get("CancellationReasons") or []
            codes = {r.get("Code") for r in reasons}
            if "ConditionalCheckFailed" in codes:
                return list(reasons)
            if not codes & _RETRYABLE_TX or attempt >= 12:
                raise
            attempt += 1
            _backoff(attempt)


def _transact_all(db: Any, items: list[dict[str, Any]]) -> bool:
    """True if the transaction applied; False if any item's condition failed."""
    return _transact_reasons(db, items) is None


def _conditional_batch(db: Any, keys: Sequence[str], update: Any) -> list[str]:
    """Apply one conditional update per key, 100 to a transaction; a transaction that
    a condition failed is done again one by one. Returns the keys that applied."""
    done: list[str] = []
    for start in range(0, len(keys), TRANSACTION_LIMIT):
        chunk = list(keys[start : start + TRANSACTION_LIMIT])
        if len(chunk) > 1 and _transact_all(db, [{"Update": update(k)} for k in chunk]):
            done += chunk
            continue
        done += [k for k in chunk if _applied(db.update_item, **update(k))]
    return done


def _backoff(attempt: int) -> None:
    # Jittered exponential backoff for transaction conflicts and unprocessed keys.
    time.sleep(min(0.5, 0.005 * (2**attempt)) * random.random())
