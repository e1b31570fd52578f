"""The `stratoflow` command as users' scripts call it: exit codes, stdout, stderr."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def cli(*args: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "shared"), "STRATOFLOW_HOME": str(cwd / ".sf")}
    return subprocess.run(
        [sys.executable, "-m", "stratoflow.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


GOOD = """\
id: hello
params: {greeting: hi}
tasks:
  - id: a
    command: echo "$STRATOFLOW_PARAM_GREETING $STRATOFLOW_PARAM_NAME" > out.txt
  - id: b
    command: cat out.txt
    depends: [a]
"""


def test_run_json_prints_one_document_with_the_documented_shape(tmp_path: Path) -> None:
    wf = write(tmp_path / "hello.yaml", GOOD)
    result = cli("run", str(wf), "--json", "--param", "name=ada", "--workers", "2", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)  # exactly one document: json.loads rejects trailing data
    assert set(doc) >= {"run_id", "workflow_id", "status", "started_at", "finished_at", "tasks"}
    assert doc["status"] == "succeeded" and doc["workflow_id"] == "hello"
    assert set(doc["tasks"]) == {"a", "b"}
    b = doc["tasks"]["b"]
    assert set(b) == {
        "status",
        "attempts",
        "exit_code",
        "timed_out",
        "started_at",
        "finished_at",
        "output_tail",
    }
    assert (b["status"], b["attempts"], b["exit_code"], b["timed_out"]) == (
        "succeeded",
        1,
        0,
        False,
    )
    # commands ran in the workflow file's folder, with an undeclared --param
    assert b["output_tail"] == "hi ada\n"
    assert (tmp_path / "out.txt").exists()


def test_run_exits_1_when_the_run_fails(tmp_path: Path) -> None:
    wf = write(
        tmp_path / "f.json",
        json.dumps(
            {
                "id": "f",
                "tasks": [
                    {"id": "a", "command": "echo boom; exit 3"},
                    {"id": "b", "command": "true", "depends": ["a"]},
                ],
            }
        ),
    )
    result = cli("run", str(wf), "--json", cwd=tmp_path)
    assert result.returncode == 1
    doc = json.loads(result.stdout)
    assert doc["status"] == "failed"
    assert doc["tasks"]["a"]["exit_code"] == 3 and doc["tasks"]["a"]["output_tail"] == "boom\n"
    never = doc["tasks"]["b"]
    assert never == {
        "status": "upstream_failed",
        "attempts": 0,
        "exit_code": None,
        "timed_out": False,
        "started_at": None,
        "finished_at": None,
        "output_tail": "",
    }


def test_run_without_json_shows_a_final_table(tmp_path: Path) -> None:
    wf = write(tmp_path / "hello.yaml", GOOD)
    result = cli("run", str(wf), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "succeeded" in result.stdout and "hello" in result.stdout


INVALID = {
    "bad_id.yaml": ("id: 'no spaces'\ntasks: [{id: a, command: 'true'}]\n", "id"),
    "dup_task.yaml": (
        "id: w\ntasks: [{id: a, command: 'true'}, {id: a, command: 'true'}]\n",
        '"a"',
    ),
    "dup_key.json": ('{"id": "w", "id": "v", "tasks": [{"id": "a", "command": "true"}]}', "id"),
    "unknown_dep.yaml": ("id: w\ntasks: [{id: a, command: 'true', depends: [ghost]}]\n", "ghost"),
    "self_dep.yaml": ("id: w\ntasks: [{id: a, command: 'true', depends: [a]}]\n", "a"),
    "cycle.yaml": (
        "id: w\ntasks:\n  - {id: a, command: 'true', depends: [c]}\n"
        "  - {id: b, command: 'true', depends: [a]}\n  - {id: c, command: 'true', depends: [b]}\n",
        "a -> b -> c -> a",
    ),
    "rule.yaml": (
        "id: w\ntasks: [{id: a, command: 'true', trigger_rule: sometimes}]\n",
        "sometimes",
    ),
    "retries.yaml": ("id: w\ntasks: [{id: a, command: 'true', retries: -1}]\n", "retries"),
    "timeout.yaml": ("id: w\ntasks: [{id: a, command: 'true', timeout: 0}]\n", "timeout"),
    "timeout_text.yaml": ("id: w\ntasks: [{id: a, command: 'true', timeout: soon}]\n", "soon"),
    "executor.yaml": ("id: w\ntasks: [{id: a, command: 'true', executor: k8s}]\n", "k8s"),
    "cron.yaml": ("id: w\nschedule: '61 * * * *'\ntasks: [{id: a, command: 'true'}]\n", "61"),
    "tz.yaml": (
        "id: w\ntimezone: Mars/Olympus\ntasks: [{id: a, command: 'true'}]\n",
        "Mars/Olympus",
    ),
    "broken.json": ('{"id": "w", "tasks": [}', "line 1"),
    "broken.yaml": ("id: w\ntasks:\n  - id: a\n   command: x\n", "line"),
    "unknown_field.yaml": ("id: w\ntasks: [{id: a, command: 'true', comand: x}]\n", "comand"),
    "env_name.yaml": ("id: w\ntasks: [{id: a, command: 'true', env: {'A=B': x}}]\n", "A=B"),
    "lambda_timeout.yaml": ("id: w\ntasks: [{id: a, command: 'true', timeout: 1h}]\n", "fargate"),
    "param_case.yaml": (
        "id: w\nparams: {region: a, REGION: b}\ntasks: [{id: a, command: 'true'}]\n",
        "REGION",
    ),
}


@pytest.mark.parametrize("name", sorted(INVALID))
def test_invalid_input_exits_2_with_one_paragraph_and_runs_nothing(
    tmp_path: Path, name: str
) -> None:
    text, expected = INVALID[name]
    # a valid task that would leave a trace if anything ran
    path = write(
        tmp_path / name, text.replace("'true'", "'touch ran'").replace('"true"', '"touch ran"')
    )
    for command in (["validate", str(path)], ["run", str(path), "--json"]):
        result = cli(*command, cwd=tmp_path)
        assert result.returncode == 2, (name, result.stderr)
        assert result.stdout == ""
        assert "Traceback" not in result.stderr
        message = result.stderr.strip()
        assert name in message and expected in message, message
        assert "\n" not in message.replace("\n ", " "), message
    assert not (tmp_path / "ran").exists()
    assert not (tmp_path / ".sf").exists()


@pytest.mark.parametrize(
    "args",
    [
        ["--param", "novalue"],
        ["--param", "=x"],
        ["--param", "has space=1"],
        ["--param", "dash-name=1"],
        ["--param", "GREETING=clash"],
        ["--param", "big=" + "x" * 40_000],
        ["--workers", "0"],
    ],
)
def test_bad_options_exit_2_before_anything_runs(tmp_path: Path, args: list[str]) -> None:
    wf = write(tmp_path / "hello.yaml", GOOD)
    result = cli("run", str(wf), *args, cwd=tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out.txt").exists()


def test_missing_file_exits_2(tmp_path: Path) -> None:
    result = cli("run", str(tmp_path / "nope.yaml"), cwd=tmp_path)
    assert result.returncode == 2
    assert "nope.yaml" in result.stderr and "Traceback" not in result.stderr


def test_graph_prints_mermaid_and_dot(tmp_path: Path) -> None:
    wf = write(tmp_path / "hello.yaml", GOOD)
    mermaid = cli("graph", str(wf), cwd=tmp_path)
    assert mermaid.returncode == 0 and mermaid.stdout.startswith("flowchart")
    dot = cli("graph", str(wf), "--format", "dot", cwd=tmp_path)
    assert dot.returncode == 0 and '"a" -> "b"' in dot.stdout


def test_schema_is_json_schema_for_workflow_files(tmp_path: Path) -> None:
    result = cli("schema", cwd=tmp_path)
    schema = json.loads(result.stdout)
    assert "$schema" in schema and "tasks" in schema["properties"]


def test_ctrl_c_cancels_the_run_kills_its_tasks_and_records_them(tmp_path: Path) -> None:
    import signal
    import time

    pid_file = tmp_path / "pid"
    wf = write(
        tmp_path / "long.yaml",
        f"""\
id: long
tasks:
  - id: a
    command: sleep 60 & echo $! > {pid_file}; wait
  - id: b
    command: touch {tmp_path / "b-ran"}
    depends: [a]
""",
    )
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT / "shared"),
        "STRATOFLOW_HOME": str(tmp_path / ".sf"),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "stratoflow.cli", "run", str(wf), "--json"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while not (pid_file.exists() and pid_file.read_text().strip()):
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.05)
    grandchild = int(pid_file.read_text())
    interrupted = time.monotonic()
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert time.monotonic() - interrupted < 15
    doc = json.loads(out)
    assert doc["status"] == "cancelled"
    assert doc["tasks"]["a"]["status"] == "cancelled" and doc["tasks"]["a"]["attempts"] == 1
    assert doc["tasks"]["b"]["status"] == "cancelled" and doc["tasks"]["b"]["attempts"] == 0
    assert not (tmp_path / "b-ran").exists()
    stat = Path(f"/proc/{grandchild}/stat")
    assert not stat.exists() or stat.read_text().split(")")[-1].split()[0] == "Z"


def test_run_against_an_endpoint_url_uses_that_endpoint(tmp_path: Path) -> None:
    """As with LocalStack: the CLI provisions what is missing at the endpoint and runs there."""
    from stratoflow.aws.clients import AwsClients
    from stratoflow.local.emulator import LOCAL_CREDENTIALS, EmbeddedEmulator

    for name, value in LOCAL_CREDENTIALS.items():
        os.environ.setdefault(name, value)
    wf = write(tmp_path / "hello.yaml", GOOD)
    with EmbeddedEmulator() as emulator:
        result = cli(
            "run", str(wf), "--json", "--endpoint-url", emulator.endpoint_url, cwd=tmp_path
        )
        assert result.returncode == 0, result.stderr
        run_id = json.loads(result.stdout)["run_id"]
        # the run's state lives at that endpoint, not in a private emulator
        db = AwsClients("us-east-1", emulator.endpoint_url).dynamodb
        item = db.get_item(
            TableName="stratoflow", Key={"pk": {"S": f"RUN#{run_id}"}, "sk": {"S": "#RUN"}}
        )["Item"]
        assert item["status"]["S"] == "succeeded"
        # a second run reuses the resources it finds there
        again = cli("run", str(wf), "--json", "--endpoint-url", emulator.endpoint_url, cwd=tmp_path)
        assert again.returncode == 0, again.stderr


def test_unreachable_endpoint_is_bad_input(tmp_path: Path) -> None:
    wf = write(tmp_path / "hello.yaml", GOOD)
    result = cli("run", str(wf), "--endpoint-url", "http://127.0.0.1:9", cwd=tmp_path)
    assert result.returncode == 2
    assert "127.0.0.1:9" in result.stderr and "Traceback" not in result.stderr


def test_next_lists_fire_times_in_the_zone_and_in_utc(tmp_path: Path) -> None:
    wf = write(
        tmp_path / "nightly.yaml",
        """\
id: nightly
schedule: "30 2 * * *"
timezone: America/New_York
tasks: [{id: a, command: "true"}]
""",
    )
    result = cli(
        "next", str(wf), "-n", "3", "--after", "2026-03-06T12:00:00Z", "--json", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    # 02:30 does not exist on 2026-03-08 in New York: skipped
    assert json.loads(result.stdout) == [
        "2026-03-07T07:30:00Z",
        "2026-03-09T06:30:00Z",
        "2026-03-10T06:30:00Z",
    ]
    table = cli("next", str(wf), "-n", "1", "--after", "2026-03-06T12:00:00Z", cwd=tmp_path)
    assert "02:30 EST" in table.stdout and "07:30:00Z" in table.stdout


def test_next_without_a_schedule_is_bad_input(tmp_path: Path) -> None:
    wf = write(tmp_path / "hello.yaml", GOOD)
    result = cli("next", str(wf), cwd=tmp_path)
    assert result.returncode == 2 and "no schedule" in result.stderr


NIGHTLY = """\
id: nightly
schedule: "0 6 * * *"
timezone: Pacific/Kiritimati
tasks: [{id: a, command: "true"}]
"""


@pytest.mark.parametrize(
    ("after", "expected"),
    [
        ("9999-12-31T23:59:59Z", "out of range"),
        ("0000-01-01T00:00:00Z", "out of range"),
        ("0001-01-01T00:00:00+14:00", "out of range"),
        ("9999-12-30T23:59:59-14:00", "out of range"),
        ("garbage", "expected an ISO 8601 time"),
        ("", "expected an ISO 8601 time"),
        ("2026-13-01T00:00:00Z", "expected an ISO 8601 time"),
        # in range, but the calendar ends before the third fire time
        ("9999-12-30T00:00:00Z", "fewer than 3 fire times"),
    ],
)
def test_next_with_an_after_out_of_range_or_invalid_exits_2(
    tmp_path: Path, after: str, expected: str
) -> None:
    wf = write(tmp_path / "nightly.yaml", NIGHTLY)
    result = cli("next", str(wf), "-n", "3", "--after", after, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert result.stdout == "" and "Traceback" not in result.stderr
    message = " ".join(result.stderr.split())
    assert message.startswith("error: --after") and repr(after) in message, message
    assert expected in message, message


def test_next_at_the_edges_of_the_range_lists_fire_times(tmp_path: Path) -> None:
    wf = write(tmp_path / "nightly.yaml", NIGHTLY)
    late = cli(
        "next", str(wf), "-n", "1", "--after", "9999-12-29T00:00:00Z", "--json", cwd=tmp_path
    )
    assert late.returncode == 0, late.stderr
    assert json.loads(late.stdout) == ["9999-12-29T16:00:00Z"]
    early = cli(
        "next", str(wf), "-n", "1", "--after", "0001-01-02T00:00:00Z", "--json", cwd=tmp_path
    )
    assert early.returncode == 0, early.stderr


@pytest.mark.parametrize(
    ("start", "end", "expected"),
    [
        (
            "0000-01-01T00:00:00Z",
            "2026-01-01T00:00:00Z",
            "--start '0000-01-01T00:00:00Z': out of range",
        ),
        (
            "2026-01-01T00:00:00Z",
            "9999-12-31T23:59:59Z",
            "--end '9999-12-31T23:59:59Z': out of range",
        ),
        ("2026-01-01T00:00:00Z", "nonsense", "--end 'nonsense': expected an ISO 8601 time"),
        # every slot of 8,000 years: more than one backfill creates
        ("0001-01-02T00:00:00Z", "9999-12-30T00:00:00Z", "more than 10000 slots"),
    ],
)
def test_backfill_with_extreme_dates_exits_2_and_creates_nothing(
    tmp_path: Path, start: str, end: str, expected: str
) -> None:
    wf = write(tmp_path / "nightly.yaml", NIGHTLY)
    assert cli("upload", str(wf), cwd=tmp_path).returncode == 0
    result = cli("backfill", "nightly", "--start", start, "--end", end, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    message = " ".join(result.stderr.split())
    assert expected in message, message
    runs = cli("runs", "nightly", "--json", cwd=tmp_path)
    assert json.loads(runs.stdout) == []
