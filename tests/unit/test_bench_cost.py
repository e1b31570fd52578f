"""The benchmark's cost model (bench/cost.py): its arithmetic on fixed inputs."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path
from types import ModuleType

import pytest

COST_PY = Path(__file__).resolve().parents[2] / "bench" / "cost.py"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("stratoflow_bench_cost", COST_PY)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while being built
    spec.loader.exec_module(module)
    return module


cost = _load()


def test_cost_per_million_tasks_by_component() -> None:
    usage = cost.TaskUsage(
        functions={
            "executor": cost.LambdaUsage(1.0, 30.0, 1024),  # 0.03 GB-s per task
            "completion": cost.LambdaUsage(0.1, 50.0, 512),  # 0.0025 GB-s per task
        },
        sqs_requests=6.0,
        dynamodb_wru=8.0,
        dynamodb_rru=2.0,
        s3_puts=0.0,
        s3_gets=0.0,
        log_bytes=1024.0,
        sfn_transitions=1.0,
    )
    c = cost.cost_per_million(usage)
    assert c.lambda_requests == pytest.approx(1.1 * 0.20)
    assert c.lambda_compute == pytest.approx(0.0325 * 0.0000133334 * 1e6)
    assert c.sqs == pytest.approx(6 * 0.40)
    assert c.dynamodb_write == pytest.approx(8 * 0.625)
    assert c.dynamodb_read == pytest.approx(2 * 0.125)
    assert c.s3 == 0
    assert c.total == pytest.approx(0.22 + 0.4333355 + 2.4 + 5.0 + 0.25)
    assert c.step_functions == pytest.approx(25.0)
    assert c.cheaper_than_step_functions == pytest.approx(25.0 / 8.3033355)
    assert c.cloudwatch_logs == pytest.approx(1e6 * 1024 / 1024**3 * 0.50)
    assert set(c.as_dict()) >= {"total", "step_functions", "lambda_compute"}


def test_s3_requests_are_priced_by_kind() -> None:
    c = cost.cost_per_million(cost.TaskUsage(s3_puts=0.001, s3_gets=0.01, sfn_transitions=2.5))
    assert c.s3 == pytest.approx(0.001 * 5.0 + 0.01 * 0.4)  # $5 and $0.40 per million
    assert c.step_functions == pytest.approx(62.5)


def test_nothing_used_costs_nothing() -> None:
    c = cost.cost_per_million(cost.TaskUsage())
    assert c.total == 0
    assert math.isinf(c.cheaper_than_step_functions)


def test_prices_can_be_changed() -> None:
    prices = cost.Prices(dynamodb_per_wru=1.25 / 1e6)
    c = cost.cost_per_million(cost.TaskUsage(dynamodb_wru=4), prices)
    assert c.dynamodb_write == pytest.approx(5.0)


def test_lambda_bills_whole_milliseconds() -> None:
    assert cost.lambda_billed_ms(0.0301) == 31
    assert cost.lambda_billed_ms(0.030) == 30
    assert cost.lambda_billed_ms(0.0) == 1


def test_sqs_bills_each_64_kb_chunk() -> None:
    assert cost.sqs_billed_requests(0) == 1
    assert cost.sqs_billed_requests(65536) == 1
    assert cost.sqs_billed_requests(65537) == 2
    assert cost.sqs_billed_requests(256 * 1024) == 4


def test_dynamodb_units() -> None:
    assert cost.write_units(0) == 1
    assert cost.write_units(1024) == 1
    assert cost.write_units(1025) == 2
    assert cost.read_units(4096) == 1.0
    assert cost.read_units(4097) == 2.0
    assert cost.read_units(100, consistent=False) == 0.5
    # 2 + len("RUN#x") + 1 + len("123") digits → (3 + 1) // 2 + 1 = 3 bytes
    assert cost.dynamodb_item_size({"pk": {"S": "RUN#x"}, "n": {"N": "123"}}) == 11
