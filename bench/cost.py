"""The cost model: what the orchestration of one million tasks costs at on-demand prices.

Pure arithmetic on per-task usage measured by `bench/run.py`; no I/O, so it is unit tested
on fixed inputs (tests/unit/test_bench_cost.py). Prices are us-east-1, on-demand, as
published on PRICES_AS_OF (sources in PRICE_SOURCES and docs/benchmarks.md).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

PRICES_AS_OF = "2026-11-27"
PRICE_SOURCES = {
    "lambda": "https://aws.amazon.com/lambda/pricing/",
    "sqs": "https://aws.amazon.com/sqs/pricing/",
    "dynamodb": "https://aws.amazon.com/dynamodb/pricing/on-demand/",
    "s3": "https://aws.amazon.com/s3/pricing/",
    "step_functions": "https://aws.amazon.com/step-functions/pricing/",
    "cloudwatch_logs": "https://aws.amazon.com/cloudwatch/pricing/",
}
MILLION = 1_000_000
SQS_CHUNK_BYTES = 64 * 1024
"""SQS bills each 64 KB chunk of a request's payload as one request."""
DYNAMODB_WRITE_UNIT_BYTES = 1024
DYNAMODB_READ_UNIT_BYTES = 4096
TRANSACTION_FACTOR = 2
"""Transactional writes (and reads) consume two units per item-unit."""


@dataclass(frozen=True)
class Prices:
    """USD, us-east-1, on-demand, first pricing tier, no free tier."""

    lambda_per_request: float = 0.20 / MILLION
    lambda_per_gb_second: float = 0.0000133334  # arm64 (Graviton), first 7.5 billion GB-s
    sqs_per_request: float = 0.40 / MILLION  # standard queue, first 100 billion requests
    dynamodb_per_wru: float = 0.625 / MILLION  # on-demand write request unit
    dynamodb_per_rru: float = 0.125 / MILLION  # on-demand read request unit
    s3_per_put: float = 0.005 / 1000  # PUT, COPY, POST, LIST (S3 Standard)
    s3_per_get: float = 0.0004 / 1000  # GET, SELECT and all other requests
    sfn_per_transition: float = 0.025 / 1000  # Step Functions Standard
    logs_per_gb: float = 0.50  # CloudWatch Logs ingestion, standard class


@dataclass(frozen=True)
class LambdaUsage:
    """One function's share per task: invocations, mean billed duration, configured memory."""

    invocations_per_task: float
    billed_ms_per_invocation: float
    memory_mb: int

    @property
    def gb_seconds_per_task(self) -> float:
        return (
            self.invocations_per_task
            * (self.billed_ms_per_invocation / 1000.0)
            * (self.memory_mb / 1024.0)
        )


@dataclass(frozen=True)
class TaskUsage:
    """Billable usage per task of the orchestration (not of the user's commands)."""

    functions: dict[str, LambdaUsage] = field(default_factory=dict)
    sqs_requests: float = 0.0
    dynamodb_wru: float = 0.0
    dynamodb_rru: float = 0.0
    s3_puts: float = 0.0
    s3_gets: float = 0.0
    log_bytes: float = 0.0
    """Log bytes ingested per task (reported beside the total, not in it)."""
    sfn_transitions: float = 1.0
    """Step Functions Standard state transitions per task for the same DAG."""


@dataclass(frozen=True)
class Cost:
    """USD per million tasks."""

    lambda_requests: float
    lambda_compute: float
    sqs: float
    dynamodb_write: float
    dynamodb_read: float
    s3: float
    total: float
    cloudwatch_logs: float
    step_functions: float
    cheaper_than_step_functions: float
    """Step Functions' cost divided by ours (∞ if ours is zero)."""

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def cost_per_million(usage: TaskUsage, prices: Prices = Prices()) -> Cost:
    """The orchestration's cost of one million tasks, by component, beside Step Functions."""
    lambda_requests = sum(f.invocations_per_task for f in usage.functions.values())
    gb_seconds = sum(f.gb_seconds_per_task for f in usage.functions.values())
    parts = {
        "lambda_requests": lambda_requests * prices.lambda_per_request,
        "lambda_compute": gb_seconds * prices.lambda_per_gb_second,
        "sqs": usage.sqs_requests * prices.sqs_per_request,
        "dynamodb_write": usage.dynamodb_wru * prices.dynamodb_per_wru,
        "dynamodb_read": usage.dynamodb_rru * prices.dynamodb_per_rru,
        "s3": usage.s3_puts * prices.s3_per_put + usage.s3_gets * prices.s3_per_get,
    }
    per_million = {k: v * MILLION for k, v in parts.items()}
    total = sum(per_million.values())
    sfn = usage.sfn_transitions * prices.sfn_per_transition * MILLION
    logs = usage.log_bytes / 1024**3 * prices.logs_per_gb * MILLION
    return Cost(
        **per_million,
        total=total,
        cloudwatch_logs=logs,
        step_functions=sfn,
        cheaper_than_step_functions=(sfn / total) if total > 0 else math.inf,
    )


# ------------------------------------------------------------------ unit arithmetic


def lambda_billed_ms(duration_seconds: float) -> int:
    """Lambda bills duration rounded up to the next millisecond (minimum 1 ms)."""
    return max(1, math.ceil(duration_seconds * 1000 - 1e-9))


def sqs_billed_requests(payload_bytes: int) -> int:
    """One request per started 64 KB chunk of payload (an empty payload is one request)."""
    return max(1, math.ceil(payload_bytes / SQS_CHUNK_BYTES))


def write_units(item_bytes: int) -> int:
    """Write request units of one standard write of an item of `item_bytes`."""
    return max(1, math.ceil(item_bytes / DYNAMODB_WRITE_UNIT_BYTES))


def read_units(item_bytes: int, consistent: bool = True) -> float:
    """Read request units of one read of an item: strongly consistent 1 per 4 KB, eventual ½."""
    units = max(1, math.ceil(item_bytes / DYNAMODB_READ_UNIT_BYTES))
    return float(units) if consistent else units / 2


def dynamodb_item_size(item: dict[str, object]) -> int:
    """An item's size as DynamoDB counts it: attribute names plus values (approximately for
    numbers: their digits), in the low-level attribute-value format."""
    return sum(len(name.encode()) + _value_size(value) for name, value in item.items())


def _value_size(value: object) -> int:
    if not isinstance(value, dict) or len(value) != 1:
        return len(str(value).encode())
    ((kind, v),) = value.items()
    if kind == "S":
        return len(str(v).encode())
    if kind == "N":
        return (len(str(v).lstrip("-").replace(".", "")) + 1) // 2 + 1
    if kind == "B":
        return len(v) if isinstance(v, bytes | bytearray) else len(str(v))
    if kind in ("BOOL", "NULL"):
        return 1
    if kind == "M":
        assert isinstance(v, dict)
        return 3 + sum(len(k.encode()) + _value_size(x) + 1 for k, x in v.items())
    if kind == "L":
        assert isinstance(v, list)
        return 3 + sum(_value_size(x) + 1 for x in v)
    if kind in ("SS", "NS", "BS"):
        assert isinstance(v, list)
        return sum(len(str(x).encode()) for x in v)
    return len(str(v).encode())
