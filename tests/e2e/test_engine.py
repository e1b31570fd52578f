"""The engine end to end on the embedded engine: real handlers, real queues, real commands."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from stratoflow.local.runtime import LocalRuntime
from tests.support import alive, run_workflow, statuses


def _times(path: Path) -> list[float]:
    return [float(x) for x in path.read_text().split()]


def test_every_trigger_rule_decides_as_airflow_does(runtime: LocalRuntime, tmp_path: Path) -> None:
    t = lambda id_, deps, rule: {  # noqa: E731
        "id": id_,
        "command": "true",
        "depends": deps,
        "trigger_rule": rule,
    }
    doc = run_workflow(
        runtime,
        {
            "tasks": [
                {"id": "ok", "command": "true"},
                {"id": "bad", "command": "exit 1"},
                t("all_success_after_failure", ["ok", "bad"], "all_success"),
                t("all_failed_runs", ["bad"], "all_failed"),
                t("all_failed_skips", ["ok"], "all_failed"),
                t("skip_propagates", ["all_failed_skips"], "all_success"),
                t("all_done_runs", ["ok", "bad"], "all_done"),
                t("one_success_runs", ["ok", "bad"], "one_success"),
                t("one_success_upstream_failed", ["bad"], "one_success"),
                t("one_failed_runs", ["ok", "bad"], "one_failed"),
                t("one_failed_skips", ["ok"], "one_failed"),
                t("one_done_runs", ["bad"], "one_done"),
                t("one_done_skips", ["all_failed_skips"], "one_done"),
                t("none_failed_runs_past_skip", ["ok", "all_failed_skips"], "none_failed"),
                t("none_failed_upstream_failed", ["bad"], "none_failed"),
                t("none_skipped_runs_past_failure", ["bad"], "none_skipped"),
                t("none_skipped_skips", ["all_failed_skips"], "none_skipped"),
                t("always_runs", ["bad"], "always"),
            ]
        },
        tmp_path,
    )
    assert statuses(doc) == {
        "ok": "succeeded",
        "bad": "failed",
        "all_success_after_failure": "upstream_failed",
        "all_failed_runs": "succeeded",
        "all_failed_skips": "skipped",
        "skip_propagates": "skipped",
        "all_done_runs": "succeeded",
        "one_success_runs": "succeeded",
        "one_success_upstream_failed": "upstream_failed",
        "one_failed_runs": "succeeded",
        "one_failed_skips": "skipped",
        "one_done_runs": "succeeded",
        "one_done_skips": "skipped",
        "none_failed_runs_past_skip": "succeeded",
        "none_failed_upstream_failed": "upstream_failed",
        "none_skipped_runs_past_failure": "succeeded",
        "none_skipped_skips": "skipped",
        "always_runs": "succeeded",
    }
    assert doc["status"] == "failed"
    never_ran = doc["tasks"]["skip_propagates"]
    assert never_ran["attempts"] == 0
    assert never_ran["started_at"] is None and never_ran["exit_code"] is None


def test_one_success_fires_before_its_slow_parent_finishes(
    runtime: LocalRuntime, tmp_path: Path
) -> None:
    doc = run_workflow(
        runtime,
        {
            "tasks": [
                {"id": "fast", "command": "true"},
                {"id": "slow", "command": "sleep 2"},
                {
                    "id": "eager",
                    "command": "true",
                    "depends": ["fast", "slow"],
                    "trigger_rule": "one_success",
                },
            ]
        },
        tmp_path,
    )
    assert doc["status"] == "succeeded"
    assert doc["tasks"]["eager"]["finished_at"] < doc["tasks"]["slow"]["finished_at"]


def test_run_succeeds_when_every_leaf_succeeded_or_skipped(
    runtime: LocalRuntime, tmp_path: Path
) -> None:
    doc = run_workflow(
        runtime,
        {
            "tasks": [
                {"id": "flaky", "command": "exit 1"},
                # a failure handled by an on-failure branch does not fail the run
                {
                    "id": "on_failure",
                    "command": "true",
                    "depends": ["flaky"],
                    "trigger_rule": "one_failed",
                },
                {
                    "id": "report",
                    "command": "true",
                    "depends": ["flaky"],
                    "trigger_rule": "all_failed",
                },
            ]
        },
        tmp_path,
    )
    # flaky is not a leaf; the leaves succeeded
    assert doc["status"] == "succeeded"
    doc = run_workflow(
        runtime,
        {"tasks": [{"id": "a", "command": "true"}, {"id": "b", "command": "exit 4"}]},
        tmp_path,
    )
    assert doc["status"] == "failed"
    assert doc["tasks"]["b"]["exit_code"] == 4


def test_retries_wait_with_exponential_backoff_and_count_attempts(
    runtime: LocalRuntime, tmp_path: Path
) -> None:
    log = tmp_path / "attempts"
    doc = run_workflow(
        runtime,
        {
            "tasks": [
                {
                    "id": "flaky",
                    # fails twice, succeeds on the third attempt
                    "command": f'echo "$STRATOFLOW_ATTEMPT $(date +%s.%N)" >> {log}; '
                    '[ "$STRATOFLOW_ATTEMPT" -ge 3 ]',
                    "retries": 3,
                    "retry_delay": 0.3,
                    "retry_backoff": 2,
                }
            ]
        },
        tmp_path,
    )
    rows = [line.split() for line in log.read_text().splitlines()]
    assert [r[0] for r in rows] == ["1", "2", "3"]
    stamps = [float(r[1]) for r in rows]
    first_gap, second_gap = stamps[1] - stamps[0], stamps[2] - stamps[1]
    assert first_gap >= 0.3 and second_gap >= 0.6  # delay × backoff^(attempt−1)
    assert second_gap < 3.0
    assert doc["status"] == "succeeded"
    assert doc["tasks"]["flaky"]["attempts"] == 3


def test_a_task_out_of_retries_fails_with_its_last_exit_code(
    runtime: LocalRuntime, tmp_path: Path
) -> None:
    doc = run_workflow(
        runtime,
        {
            "tasks": [
                {"id": "doomed", "command": "echo try $STRATOFLOW_ATTEMPT; exit 7", "retries": 1}
            ]
        },
        tmp_path,
    )
    task = doc["tasks"]["doomed"]
    assert (task["status"], task["attempts"], task["exit_code"]) == ("failed", 2, 7)
    assert task["output_tail"] == "try 2\n"


def test_timeout_kills_the_whole_process_tree_and_is_retried(
    runtime: LocalRuntime, tmp_path: Path
) -> None:
    pids = tmp_path / "pids"
    doc = run_workflow(
        runtime,
        {
            "tasks": [
                {
                    "id": "hang",
                    # a grandchild that ignores SIGTERM, and one in a subshell
                    "command": f"(trap '' TERM; sleep 300) & echo $! >> {pids}; "
                    f"sh -c 'sleep 300 & echo $! >> {pids}; wait' & sleep 300",
                    "timeout": 0.5,
                    "retries": 1,
                }
            ]
        },
        tmp_path,
    )
    task = doc["tasks"]["hang"]
    assert task["status"] == "failed"
    assert task["timed_out"] is True and task["exit_code"] is None
    assert task["attempts"] == 2
    started = [int(p) for p in pids.read_text().split()]
    assert len(started) == 4  # two per attempt
    deadline = time.monotonic() + 3
    while any(alive(p) for p in started) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [p for p in started if alive(p)]


def test_concurrency_cap_limits_running_tasks(runtime: LocalRuntime, tmp_path: Path) -> None:
    spans = tmp_path / "spans"
    cmd = f'echo "start $(date +%s%N)" >> {spans}; sleep 0.3; echo "end $(date +%s%N)" >> {spans}'
    doc = run_workflow(
        runtime,
        {"concurrency": 2, "tasks": [{"id": f"t{i}", "command": cmd} for i in range(6)]},
        tmp_path,
    )
    assert doc["status"] == "succeeded"
    assert _peak(spans) == 2  # the 4 workers would allow 4


def test_the_local_workers_bound_the_commands_running_at_once(
    runtime: LocalRuntime, tmp_path: Path
) -> None:
    # The runtime has more executor threads than workers (an attempt sends its report after
    # giving its slot up), yet never more than `workers` commands run at once.
    spans = tmp_path / "spans"
    cmd = f'echo "start $(date +%s%N)" >> {spans}; sleep 0.3; echo "end $(date +%s%N)" >> {spans}'
    doc = run_workflow(
        runtime, {"tasks": [{"id": f"t{i}", "command": cmd} for i in range(12)]}, tmp_path
    )
    assert doc["status"] == "succeeded"
    assert _peak(spans) == runtime.workers == 4


def _peak(spans: Path) -> int:
    events = sorted(
        (int(stamp), kind)
        for kind, stamp in (line.split() for line in spans.read_text().splitlines())
    )
    running = peak = 0
    for _, kind in events:
        running += 1 if kind == "start" else -1
        peak = max(peak, running)
    return peak


def test_ready_tasks_start_by_priority_under_the_cap(runtime: LocalRuntime, tmp_path: Path) -> None:
    order = tmp_path / "order"
    tasks = [
        {"id": f"p{prio}", "command": f"echo p{prio} >> {order}", "priority": prio}
        for prio in (1, 5, 3, 9, 7)
    ]
    doc = run_workflow(runtime, {"concurrency": 1, "tasks": tasks}, tmp_path)
    assert doc["status"] == "succeeded"
    assert order.read_text().split() == ["p9", "p7", "p5", "p3", "p1"]


def test_failed_run_compensates_succeeded_tasks_in_reverse_completion_order(
    runtime: LocalRuntime, tmp_path: Path
) -> None:
    log = tmp_path / "saga"
    comp = lambda name: f"echo undo-{name} >> {log}"  # noqa: E731
    doc = run_workflow(
        runtime,
        {
            "tasks": [
                {"id": "reserve", "command": "true", "compensate": comp("reserve")},
                {
                    "id": "charge",
                    "command": "true",
                    "depends": ["reserve"],
                    "compensate": f"{comp('charge')}; exit 9",
                },
                {"id": "no_undo", "command": "true", "depends": ["charge"]},
                {
                    "id": "ship",
                    "command": "true",
                    "depends": ["no_undo"],
                    "compensate": comp("ship"),
                    "env": {"CARRIER": "ups"},
                },
                {"id": "notify", "command": "exit 1", "depends": ["ship"]},
            ]
        },
        tmp_path,
    )
    assert doc["status"] == "failed"
    assert log.read_text().split() == ["undo-ship", "undo-charge", "undo-reserve"]
    comps = doc["compensations"]
    assert [c["task_id"] for c in comps] == ["ship", "charge", "reserve"]
    # a failing compensation is recorded and the rest still run
    assert [c["status"] for c in comps] == ["succeeded", "failed", "succeeded"]
    assert comps[1]["exit_code"] == 9


def test_no_compensation_when_the_run_succeeds(runtime: LocalRuntime, tmp_path: Path) -> None:
    log = tmp_path / "saga"
    doc = run_workflow(
        runtime,
        {"tasks": [{"id": "a", "command": "true", "compensate": f"echo undo >> {log}"}]},
        tmp_path,
    )
    assert doc["status"] == "succeeded"
    assert doc["compensations"] == []
    assert not log.exists()


def test_commands_see_run_context_params_and_env_in_the_workflow_folder(
    runtime: LocalRuntime, tmp_path: Path
) -> None:
    doc = run_workflow(
        runtime,
        {
            "params": {"region": "eu", "size": "small"},
            "tasks": [
                {
                    "id": "show",
                    "command": "echo $STRATOFLOW_WORKFLOW_ID $STRATOFLOW_RUN_ID "
                    "$STRATOFLOW_TASK_ID $STRATOFLOW_ATTEMPT $STRATOFLOW_LOGICAL_DATE "
                    "$STRATOFLOW_PARAM_REGION $STRATOFLOW_PARAM_SIZE $STRATOFLOW_PARAM_EXTRA "
                    "$COLOR; pwd",
                    "env": {"COLOR": "blue"},
                }
            ],
        },
        tmp_path,
        params={"size": "large", "extra": "x"},
    )
    line, cwd = doc["tasks"]["show"]["output_tail"].splitlines()
    wf_id, run_id, task_id, attempt, logical, region, size, extra, color = line.split()
    assert (wf_id, run_id) == (doc["workflow_id"], doc["run_id"])
    assert (task_id, attempt, region, size, extra, color) == (
        "show",
        "1",
        "eu",
        "large",
        "x",
        "blue",
    )
    assert logical.endswith("Z") and logical.startswith("20")
    assert Path(cwd) == tmp_path


def test_output_tail_is_bounded_and_the_full_log_is_kept(
    runtime: LocalRuntime, tmp_path: Path
) -> None:
    doc = run_workflow(
        runtime,
        {
            "tasks": [
                {
                    "id": "chatty",
                    "command": "i=0; while [ $i -lt 2000 ]; do echo line-$i; i=$((i+1)); done",
                }
            ]
        },
        tmp_path,
    )
    tail = doc["tasks"]["chatty"]["output_tail"]
    assert len(tail.encode()) <= 4096
    assert tail.endswith("line-1999\n")
    logs = list((runtime.state_dir / "runs" / doc["run_id"]).glob("chatty.task.1.log"))
    assert len(logs) == 1
    assert logs[0].read_text().splitlines()[0] == "line-0"


@pytest.mark.slow
def test_thousand_task_fan_out_fan_in(runtime: LocalRuntime, tmp_path: Path) -> None:
    width = 1000
    tasks = [{"id": "root", "command": "true"}]
    tasks += [{"id": f"m{i:04d}", "command": "true", "depends": ["root"]} for i in range(width)]
    tasks.append({"id": "sink", "command": "true", "depends": [f"m{i:04d}" for i in range(width)]})
    started = time.monotonic()
    doc = run_workflow(runtime, {"tasks": tasks}, tmp_path, timeout=600)
    elapsed = time.monotonic() - started
    assert doc["status"] == "succeeded"
    assert set(statuses(doc).values()) == {"succeeded"}
    assert doc["tasks"]["sink"]["started_at"] > max(
        t["finished_at"] for tid, t in doc["tasks"].items() if tid != "sink"
    )
    print(f"1,002-task fan-out/fan-in: {elapsed:.1f} s")


def test_a_poison_message_ends_in_the_dead_letter_queue_and_harms_nothing(
    runtime: LocalRuntime, tmp_path: Path
) -> None:
    assert runtime.clients is not None and runtime.settings is not None
    sqs = runtime.clients.sqs
    dlq_url = sqs.get_queue_url(QueueName=f"{runtime.prefix}-tasks-dlq")["QueueUrl"]
    sqs.send_message(QueueUrl=runtime.settings.task_queue_url, MessageBody="{not a task")
    # a healthy run goes on beside it
    doc = run_workflow(runtime, {"tasks": [{"id": "fine", "command": "true"}]}, tmp_path)
    assert doc["status"] == "succeeded"
    deadline = time.monotonic() + 30
    bodies: list[str] = []
    while time.monotonic() < deadline and not bodies:
        resp = sqs.receive_message(QueueUrl=dlq_url, WaitTimeSeconds=1, MaxNumberOfMessages=10)
        bodies = [m["Body"] for m in resp.get("Messages", [])]
    assert bodies == ["{not a task"]


def test_a_fargate_task_runs_through_the_container_entrypoint(
    runtime: LocalRuntime, tmp_path: Path
) -> None:
    doc = run_workflow(
        runtime,
        {
            "tasks": [
                {
                    "id": "heavy",
                    "command": "tr '\\0' ' ' < /proc/$PPID/cmdline; echo",
                    "executor": "fargate",
                    "cpu": 1024,
                    "memory": 2048,
                },
                {"id": "after", "command": "true", "depends": ["heavy"]},
            ]
        },
        tmp_path,
    )
    assert statuses(doc) == {"heavy": "succeeded", "after": "succeeded"}
    # the command's parent process is the Fargate runner module, not the executor Lambda's
    assert "-m stratoflow.runner.fargate" in doc["tasks"]["heavy"]["output_tail"]
