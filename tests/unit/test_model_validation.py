"""Loading workflow files: formats, validation, and the one-paragraph error message."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from stratoflow.core.field_types import parse_duration
from stratoflow.core.loader import (
    WorkflowFileError,
    load_workflow,
    load_workflow_text,
    workflow_json_schema,
)
from stratoflow.core.model import Executor, TriggerRule, Workflow

EXAMPLE_YAML = """\
id: etl
schedule: "0 2 * * *"
timezone: Europe/Berlin
params: {region: eu}
defaults: {retries: 1, timeout: 5m}
tasks:
  - id: extract
    command: ./extract.sh
  - id: load
    command: ./load.sh
    depends: [extract]
    trigger_rule: all_success
    retry_delay: 10s
    retry_backoff: 2
    compensate: ./undo_load.sh
"""


def problem(text: str, filename: str = "wf.yaml") -> str:
    """The message of the WorkflowFileError that loading `text` raises, without the line
    and column each problem ends with (`located` keeps them; tests below check them)."""
    return re.sub(r" \(line \d+, column \d+\)", "", located(text, filename))


def located(text: str, filename: str = "wf.yaml") -> str:
    with pytest.raises(WorkflowFileError) as caught:
        load_workflow_text(text, filename)
    return caught.value.message


def two_tasks(**load_fields: object) -> str:
    """A valid JSON workflow whose second task ("load") gets extra fields."""
    load = {"id": "load", "command": "./load.sh", "depends": ["extract"], **load_fields}
    return json.dumps(
        {"id": "etl", "tasks": [{"id": "extract", "command": "./extract.sh"}, load]}, indent=2
    )


# ---- valid files ------------------------------------------------------------------------


def test_example_yaml_loads_with_defaults_applied() -> None:
    workflow = load_workflow_text(EXAMPLE_YAML, "etl.yaml")

    extract, load = workflow.resolved_tasks()
    assert (workflow.id, workflow.schedule, workflow.timezone) == (
        "etl",
        "0 2 * * *",
        "Europe/Berlin",
    )
    assert workflow.params == {"region": "eu"}
    assert (extract.retries, extract.timeout) == (1, 300.0)
    assert load.depends == ["extract"]
    assert load.trigger_rule is TriggerRule.ALL_SUCCESS
    assert (load.retry_delay, load.retry_backoff, load.compensate) == (10.0, 2.0, "./undo_load.sh")


def test_json_file_loads_from_disk(tmp_path: Path) -> None:
    path = tmp_path / "etl.json"
    path.write_text(two_tasks(executor="fargate"), encoding="utf-8")

    workflow = load_workflow(path)

    assert [t.id for t in workflow.tasks] == ["extract", "load"]
    assert workflow.tasks[1].executor is Executor.FARGATE


def test_yml_extension_is_read_as_yaml(tmp_path: Path) -> None:
    path = tmp_path / "etl.yml"
    path.write_text(EXAMPLE_YAML, encoding="utf-8")

    assert load_workflow(str(path)).id == "etl"


def test_utf8_byte_order_mark_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "etl.json"
    path.write_bytes(b"\xef\xbb\xbf" + two_tasks().encode())

    assert load_workflow(path).id == "etl"


def test_byte_order_mark_in_text_is_accepted() -> None:
    assert load_workflow_text("\ufeff" + two_tasks(), "w.json").id == "etl"


def test_single_dependency_may_be_written_as_a_string() -> None:
    text = "id: w\ntasks:\n  - {id: a, command: x}\n  - {id: b, command: x, depends: a}\n"

    assert load_workflow_text(text, "w.yaml").tasks[1].depends == ["a"]


def test_yaml_numbers_in_env_and_params_become_text() -> None:
    text = "id: w\nparams: {port: 8080}\ntasks:\n  - {id: a, command: x, env: {DEBUG: true}}\n"

    workflow = load_workflow_text(text, "w.yaml")

    assert workflow.params == {"port": "8080"}
    assert workflow.tasks[0].env == {"DEBUG": "true"}


def test_yaml_merge_key_may_be_overridden_by_the_mappings_own_keys() -> None:
    text = (
        "id: w\n"
        "x-common: &common {command: ./run.sh, retries: 2}\n"
        "tasks:\n"
        "  - {<<: *common, id: a, retries: 5}\n"
    )

    # "x-common" is an unknown field: the point is that the merge is not a duplicate key.
    message = problem(text)

    assert 'unknown field "x-common"' in message
    assert "duplicate" not in message


@pytest.mark.parametrize(
    ("written", "seconds"),
    [(30, 30.0), (1.5, 1.5), ("90s", 90.0), ("5m", 300.0), ("1h", 3600.0), ("250ms", 0.25)],
)
def test_timeout_accepts_seconds_or_a_unit(written: object, seconds: float) -> None:
    workflow = load_workflow_text(two_tasks(timeout=written, executor="fargate"), "w.json")

    assert workflow.tasks[1].timeout == seconds


def test_a_lambda_task_may_not_outlast_the_lambda_limit() -> None:
    with pytest.raises(WorkflowFileError, match=r'tasks\[1\] \(id "load"\)\.timeout.*fargate'):
        load_workflow_text(two_tasks(timeout="15m"), "w.json")
    assert load_workflow_text(two_tasks(timeout="14m"), "w.json").tasks[1].timeout == 840


def test_environment_names_and_commands_must_be_usable_by_a_shell() -> None:
    with pytest.raises(WorkflowFileError, match="A=B"):
        load_workflow_text(two_tasks(env={"A=B": "x"}), "w.json")
    with pytest.raises(WorkflowFileError, match="NUL"):
        load_workflow_text(two_tasks(command="echo a\u0000b"), "w.json")


def test_params_differing_only_in_case_are_rejected() -> None:
    text = json.dumps(
        {
            "id": "w",
            "params": {"region": "a", "REGION": "b"},
            "tasks": [{"id": "a", "command": "x"}],
        }
    )
    with pytest.raises(WorkflowFileError, match="differ only in case"):
        load_workflow_text(text, "w.json")


def test_a_schema_hint_for_editors_is_allowed() -> None:
    text = (
        '{"$schema": "./workflow.schema.json", "id": "w", "tasks": [{"id": "a", "command": "x"}]}'
    )
    assert load_workflow_text(text, "w.json").id == "w"


@pytest.mark.parametrize("shortcut", ["@hourly", "@daily", "@weekly", "@monthly", "@yearly"])
def test_schedule_shortcuts_are_accepted(shortcut: str) -> None:
    text = f"id: w\nschedule: '{shortcut}'\ntasks: [{{id: a, command: x}}]\n"

    assert load_workflow_text(text, "w.yaml").schedule == shortcut


def test_posix_style_zone_known_to_zoneinfo_is_accepted() -> None:
    text = "id: w\ntimezone: EST5EDT\ntasks: [{id: a, command: x}]\n"

    assert load_workflow_text(text, "w.yaml").timezone == "EST5EDT"


# ---- the error itself ---------------------------------------------------------------------


def test_error_carries_path_message_and_exit_code_two() -> None:
    with pytest.raises(WorkflowFileError) as caught:
        load_workflow_text('{"id": "w"}', "flows/w.json")

    err = caught.value
    assert err.path == "flows/w.json"
    assert err.exit_code == 2
    assert str(err) == err.message
    assert err.message.startswith('workflow file "flows/w.json": ')


def test_several_problems_are_numbered_in_one_paragraph() -> None:
    text = "id: w\ntasks:\n  - {id: a, command: x, retries: -1, timeout: 0, executor: k8s}\n"

    message = problem(text)

    assert message.startswith('workflow file "wf.yaml" has 3 problems: (1) ')
    assert "(2) " in message
    assert "(3) " in message
    assert "\n" not in message


def test_field_and_graph_problems_are_reported_together() -> None:
    text = (
        "id: w\ntasks:\n"
        "  - {id: a, command: x, depends: b, timeout: -1}\n"
        "  - {id: b, command: x, depends: a}\n"
    )

    message = problem(text)

    assert "has 2 problems" in message
    assert 'tasks[0] (id "a").timeout: must be greater than 0, got -1' in message
    assert "dependency cycle: a -> b -> a" in message


def test_a_long_list_of_problems_is_cut_short() -> None:
    tasks = "".join(f"  - {{id: t{i}, command: x, retries: -1}}\n" for i in range(25))

    message = problem(f"id: w\ntasks:\n{tasks}")

    assert message.startswith('workflow file "wf.yaml" has 25 problems: ')
    assert "(10) " in message
    assert "(11) " not in message
    assert message.endswith("; and 15 more")


# ---- reading the file -----------------------------------------------------------------------


def test_missing_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "absent.yaml"

    with pytest.raises(WorkflowFileError) as caught:
        load_workflow(path)

    assert caught.value.message == f'workflow file "{path}": the file does not exist'


def test_directory_is_not_a_workflow_file(tmp_path: Path) -> None:
    with pytest.raises(WorkflowFileError, match="is a directory"):
        load_workflow(tmp_path)


def test_non_utf8_file_is_rejected_with_the_offset(tmp_path: Path) -> None:
    path = tmp_path / "w.yaml"
    path.write_bytes(b"id: w\xff\n")

    with pytest.raises(WorkflowFileError, match=r"not UTF-8 text \(byte 0xff at offset 5\)"):
        load_workflow(path)


@pytest.mark.parametrize("filename", ["w.txt", "w.toml", "workflow"])
def test_other_extensions_are_rejected(filename: str) -> None:
    message = problem(EXAMPLE_YAML, filename)

    assert f'workflow file "{filename}"' in message
    assert "name it .json, .yaml or .yml" in message


def test_empty_yaml_file_is_rejected() -> None:
    assert problem("") == (
        'workflow file "wf.yaml": the file is empty; it must hold a mapping with id and tasks'
    )


def test_top_level_list_is_rejected() -> None:
    assert "the file is a list" in problem("- id: a\n")


# ---- malformed text -------------------------------------------------------------------------


def test_malformed_json_names_line_and_column() -> None:
    text = '{\n  "id": "w",\n  "tasks": [,]\n}'

    message = problem(text, "w.json")

    assert message.startswith('workflow file "w.json": invalid JSON at line 3, column 13: ')


def test_malformed_yaml_names_line_and_column() -> None:
    text = "id: w\ntasks:\n  - id: a\n   command: x\n"

    message = problem(text)

    assert message.startswith('workflow file "wf.yaml": invalid YAML at line 4, column 4: ')


def test_duplicate_json_key_is_named_with_its_line() -> None:
    text = '{\n  "id": "w",\n  "tasks": [],\n  "id": "v"\n}'

    message = problem(text, "w.json")

    assert message == (
        'workflow file "w.json": duplicate key "id" at line 4, column 3 (first at line 2)'
    )


def test_same_key_in_sibling_json_objects_is_not_a_duplicate() -> None:
    text = two_tasks()

    assert load_workflow_text(text, "w.json").tasks[1].id == "load"


def test_duplicate_yaml_key_is_named_with_its_line() -> None:
    text = "id: w\ntasks:\n  - id: a\n    command: x\n    command: y\n"

    message = problem(text)

    assert message == (
        'workflow file "wf.yaml": invalid YAML at line 5, column 5: '
        'duplicate key "command" (first at line 4)'
    )


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_json_non_finite_numbers_are_rejected_with_their_line(constant: str) -> None:
    text = two_tasks(timeout="PLACEHOLDER").replace('"PLACEHOLDER"', constant)

    message = problem(text, "w.json")

    assert f"invalid JSON at line 14, column 18: {constant} is not a JSON number" in message


def test_deeply_nested_json_is_rejected_without_a_traceback() -> None:
    assert "nested too deeply" in problem("[" * 100_000, "w.json")


# ---- field checks ---------------------------------------------------------------------------


def test_invalid_workflow_id_is_rejected_with_its_value() -> None:
    message = problem("id: -etl\ntasks: [{id: a, command: x}]\n")

    assert message.startswith('workflow file "wf.yaml": id: an id must start with a letter')
    assert message.endswith('got "-etl"')


def test_invalid_task_id_is_located_by_index_and_id() -> None:
    message = problem(two_tasks(id="load now", depends=[]))

    assert 'tasks[1] (id "load now").id: an id must start with a letter or digit' in message
    assert 'got "load now"' in message


def test_id_longer_than_128_characters_is_rejected() -> None:
    long_id = "a" * 129

    assert f'got "{long_id[:60]}..."' in problem(f"id: {long_id}\ntasks: [{{id: a, command: x}}]")


def test_unknown_trigger_rule_lists_the_allowed_rules() -> None:
    message = problem(two_tasks(trigger_rule="sometimes"))

    assert 'tasks[1] (id "load").trigger_rule: must be one of all_success, all_failed,' in message
    assert "none_skipped or always" in message
    assert 'got "sometimes"' in message


def test_negative_retries_are_rejected() -> None:
    message = problem(two_tasks(retries=-1))

    assert (
        message
        == 'workflow file "wf.yaml": tasks[1] (id "load").retries: must be at least 0, got -1'
    )


@pytest.mark.parametrize(("written", "shown"), [(0, "0"), (-5, "-5"), ("0s", '"0s"')])
def test_timeout_must_be_positive(written: object, shown: str) -> None:
    message = problem(two_tasks(timeout=written), "w.json")

    assert f'tasks[1] (id "load").timeout: must be greater than 0, got {shown}' in message


@pytest.mark.parametrize("written", ["5 minutes", "1h30m", "-5s", True])
def test_timeout_that_is_not_a_duration_is_rejected(written: object) -> None:
    message = problem(two_tasks(timeout=written), "w.json")

    assert 'tasks[1] (id "load").timeout: expected a duration such as 30 (seconds)' in message
    assert json.dumps(written) in message


def test_infinite_yaml_timeout_is_rejected() -> None:
    message = problem("id: w\ntasks: [{id: a, command: x, timeout: .inf}]\n")

    assert 'tasks[0] (id "a").timeout: expected a duration' in message


def test_unknown_executor_lists_lambda_and_fargate() -> None:
    message = problem(two_tasks(executor="k8s"))

    assert 'tasks[1] (id "load").executor: must be one of lambda or fargate, got "k8s"' in message


def test_unknown_task_field_is_named_with_a_suggestion() -> None:
    message = problem(two_tasks(timout="5m"))

    assert message == (
        'workflow file "wf.yaml": tasks[1] (id "load"): unknown field "timout" '
        '(did you mean "timeout"?)'
    )


def test_unknown_defaults_field_is_named() -> None:
    message = problem("id: w\ndefaults: {retry: 3}\ntasks: [{id: a, command: x}]\n")

    assert 'defaults: unknown field "retry" (did you mean "retries"?)' in message


def test_unknown_top_level_field_is_named() -> None:
    message = problem("id: w\nowner: me\ntasks: [{id: a, command: x}]\n")

    assert message == 'workflow file "wf.yaml": unknown field "owner"'


def test_missing_command_is_named() -> None:
    message = problem("id: w\ntasks: [{id: a}]\n")

    assert message == 'workflow file "wf.yaml": tasks[0] (id "a"): missing required field "command"'


def test_workflow_without_tasks_is_rejected() -> None:
    assert "tasks: must have at least 1 item(s), got []" in problem("id: w\ntasks: []\n")


def test_non_text_id_suggests_quoting() -> None:
    message = problem("id: 2024\ntasks: [{id: a, command: x}]\n")

    assert "id: must be a string (in YAML, quote it), got 2024" in message


def test_param_name_that_is_not_an_env_name_is_rejected() -> None:
    message = problem("id: w\nparams: {my-region: eu}\ntasks: [{id: a, command: x}]\n")

    assert 'params: param name "my-region" must match' in message


def test_param_name_with_trailing_newline_is_rejected() -> None:
    text = json.dumps(
        {"id": "w", "params": {"region\n": "eu"}, "tasks": [{"id": "a", "command": "x"}]}
    )

    assert 'param name "region\\n" must match' in problem(text, "w.json")


def test_six_field_schedule_is_rejected_with_its_value() -> None:
    message = problem("id: w\nschedule: '0 0 2 * * *'\ntasks: [{id: a, command: x}]\n")

    assert 'schedule: "0 0 2 * * *" has 6 fields' in message
    assert "seconds and years are not supported" in message


def test_garbage_schedule_is_rejected_with_its_value() -> None:
    message = problem("id: w\nschedule: 'every day'\ntasks: [{id: a, command: x}]\n")

    assert 'schedule: "every day" has 2 fields; a schedule has 5' in message


def test_unknown_timezone_is_rejected_with_its_value() -> None:
    message = problem("id: w\ntimezone: Mars/Olympus\ntasks: [{id: a, command: x}]\n")

    assert 'timezone: "Mars/Olympus" is not a known IANA time zone' in message


# ---- graph checks, as the loader reports them -------------------------------------------------


def test_duplicate_task_ids_are_located() -> None:
    text = "id: w\ntasks:\n  - {id: a, command: x}\n  - {id: a, command: y}\n"

    message = problem(text)

    assert message == (
        'workflow file "wf.yaml": tasks[1] (id "a").id: duplicate task id "a" '
        "(first used by tasks[0])"
    )


def test_unknown_dependency_is_named() -> None:
    message = problem(two_tasks(depends=["extrct"]))

    assert 'tasks[1] (id "load").depends: unknown task "extrct"' in message


def test_self_dependency_is_rejected() -> None:
    message = problem(two_tasks(depends=["load"]))

    assert 'tasks[1] (id "load").depends: a task cannot depend on itself' in message


def test_dependency_listed_twice_is_rejected() -> None:
    message = problem(two_tasks(depends=["extract", "extract"]))

    assert 'tasks[1] (id "load").depends: lists "extract" more than once' in message


def test_cycle_is_reported_with_its_tasks_in_order() -> None:
    text = (
        "id: w\ntasks:\n"
        "  - {id: a, command: x, depends: c}\n"
        "  - {id: b, command: x, depends: a}\n"
        "  - {id: c, command: x, depends: b}\n"
    )

    assert problem(text).startswith(
        'workflow file "wf.yaml": tasks: dependency cycle: a -> b -> c -> a'
    )


# ---- model details --------------------------------------------------------------------------


def test_retry_delay_grows_by_the_backoff_and_is_capped() -> None:
    text = (
        "id: w\n"
        "tasks: [{id: a, command: x, retry_delay: 10s, retry_backoff: 2, max_retry_delay: 35}]"
    )

    task = load_workflow_text(text, "w.yaml").resolved_tasks()[0]

    assert [task.retry_delay_for(n) for n in (1, 2, 3)] == [10.0, 20.0, 35.0]


def test_task_env_is_layered_over_the_defaults_env() -> None:
    text = "id: w\ndefaults: {env: {A: '1', B: '1'}}\ntasks: [{id: a, command: x, env: {B: '2'}}]\n"

    assert load_workflow_text(text, "w.yaml").resolved_tasks()[0].env == {"A": "1", "B": "2"}


def test_parse_duration_rejects_a_boolean() -> None:
    with pytest.raises(ValueError, match="got true"):
        parse_duration(True)


def test_workflow_model_raises_value_error_for_a_cycle_when_used_directly() -> None:
    data = {
        "id": "w",
        "tasks": [
            {"id": "a", "command": "x", "depends": ["b"]},
            {"id": "b", "command": "x", "depends": ["a"]},
        ],
    }

    with pytest.raises(ValueError, match="dependency cycle: a -> b -> a"):
        Workflow.model_validate(data)


# ---- JSON Schema ----------------------------------------------------------------------------


def test_json_schema_is_titled_for_editors() -> None:
    schema = workflow_json_schema()

    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["title"] == "stratoflow workflow"
    assert schema["description"]
    assert schema["additionalProperties"] is False


def test_json_schema_shows_durations_as_number_or_string() -> None:
    timeout = workflow_json_schema()["$defs"]["Task"]["properties"]["timeout"]

    assert {"type": "number", "exclusiveMinimum": 0} in timeout["anyOf"]
    assert any(branch.get("type") == "string" for branch in timeout["anyOf"])


def test_example_validates_against_the_json_schema() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    import yaml

    jsonschema.validate(yaml.safe_load(EXAMPLE_YAML), workflow_json_schema())


def test_json_schema_rejects_an_unknown_task_field() -> None:
    jsonschema = pytest.importorskip("jsonschema")

    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(json.loads(two_tasks(timout=5)), workflow_json_schema())


# ---- values the parsers cannot build --------------------------------------------------------


def test_yaml_value_that_looks_like_an_impossible_date_is_reported() -> None:
    message = problem("id: 2024-13-45\ntasks: [{id: a, command: x}]\n")

    assert message == (
        'workflow file "wf.yaml": invalid YAML: a value cannot be read '
        "(month must be in 1..12); quote it to keep it as text"
    )


def test_json_number_with_too_many_digits_is_reported() -> None:
    text = two_tasks(retries="PLACEHOLDER").replace('"PLACEHOLDER"', "9" * 5000)

    message = problem(text, "w.json")

    assert message == 'workflow file "w.json": invalid JSON: a number has too many digits to read'


# ---- role, secrets and secret params ------------------------------------------------------

SECRETS_YAML = """\
id: etl
role: stratoflow-task-etl
params:
  region: eu
  TOKEN: {secret: true}
secrets:
  DB_PASSWORD: "ssm:/stratoflow/db/password"
  API_KEY: "secretsmanager:stratoflow/api"
tasks:
  - id: extract
    command: ./extract.sh
  - id: load
    command: ./load.sh
    role: arn:aws:iam::123456789012:role/stratoflow-task-load
    secrets:
      API_KEY: "secretsmanager:stratoflow/api-load#key"
"""


def test_role_and_secrets_are_inherited_and_overridden_by_name() -> None:
    workflow = load_workflow_text(SECRETS_YAML, "etl.yaml")

    extract, load = workflow.resolved_tasks()
    assert extract.role == "stratoflow-task-etl"
    assert extract.secrets == {
        "DB_PASSWORD": "ssm:/stratoflow/db/password",
        "API_KEY": "secretsmanager:stratoflow/api",
    }
    assert load.role == "arn:aws:iam::123456789012:role/stratoflow-task-load"
    assert load.secrets["API_KEY"] == "secretsmanager:stratoflow/api-load#key"
    assert load.secrets["DB_PASSWORD"] == "ssm:/stratoflow/db/password"


def test_a_secret_param_has_an_empty_default_and_survives_a_round_trip() -> None:
    workflow = load_workflow_text(SECRETS_YAML, "etl.yaml")

    assert workflow.params == {"region": "eu", "TOKEN": ""}
    assert workflow.secret_params == ["TOKEN"]
    assert Workflow.model_validate_json(workflow.model_dump_json()) == workflow


@pytest.mark.parametrize(
    ("field", "expected"),
    [
        (
            {"secrets": {"DB": "vault:/db"}},
            'tasks[1] (id "load").secrets: secret DB: "vault:/db" must start with ssm: or '
            'secretsmanager: (e.g. "ssm:/stratoflow/db/password" or '
            '"secretsmanager:stratoflow/api-key")',
        ),
        (
            {"secrets": {"DB-PASSWORD": "ssm:/db"}},
            'tasks[1] (id "load").secrets: secret name "DB-PASSWORD" must be an environment '
            "variable name: letters, digits and _, not starting with a digit",
        ),
        (
            {"secrets": {"AWS_SECRET_ACCESS_KEY": "ssm:/db"}},
            'tasks[1] (id "load").secrets: secret name "AWS_SECRET_ACCESS_KEY" is set by the '
            "engine itself (the task role's credentials and STRATOFLOW_* variables); choose "
            "another name",
        ),
        (
            {"secrets": {"DB": "ssm:/db path"}},
            'tasks[1] (id "load").secrets: secret DB: "ssm:/db path" is not a valid SSM '
            "parameter name after ssm:",
        ),
        (
            {"secrets": {"DB": "ssm:/db"}, "env": {"DB": "plain"}},
            'tasks[1] (id "load").secrets: DB is also set in env; a variable is either a plain '
            "value (env) or a secret, not both",
        ),
        (
            {"role": "not a role"},
            'tasks[1] (id "load").role: role "not a role" must be an IAM role ARN '
            '("arn:aws:iam::123456789012:role/stratoflow-task-etl") or a role name',
        ),
    ],
)
def test_bad_secrets_and_roles_are_reported_with_field_and_value(
    field: dict[str, object], expected: str
) -> None:
    assert problem(two_tasks(**field), "wf.json") == f'workflow file "wf.json": {expected}'


def test_a_workflow_secret_that_clashes_with_a_tasks_env_is_reported() -> None:
    text = json.dumps(
        {
            "id": "etl",
            "secrets": {"TOKEN": "ssm:/t"},
            "tasks": [{"id": "a", "command": "x", "env": {"TOKEN": "plain"}}],
        }
    )
    assert problem(text, "wf.json") == (
        'workflow file "wf.json": tasks[0] (id "a").secrets: TOKEN is also set in env; a '
        "variable is either a plain value (env) or a secret, not both"
    )


@pytest.mark.parametrize(
    ("param", "expected"),
    [
        (
            {"secret": True, "default": "hunter2"},
            "params.TOKEN: a secret param takes no default (the workflow file is stored and "
            "shown); give its value when triggering the run, or use `secrets:` for a value "
            "kept in SSM or Secrets Manager",
        ),
        ({"secret": "maybe"}, 'params.TOKEN.secret: must be true or false, got "maybe"'),
        (
            {"secret": True, "hidden": True},
            'params.TOKEN: unknown field "hidden"; a param is a default value or '
            "{default: ..., secret: true|false}",
        ),
    ],
)
def test_bad_secret_params_are_reported(param: dict[str, object], expected: str) -> None:
    text = json.dumps(
        {"id": "etl", "params": {"TOKEN": param}, "tasks": [{"id": "a", "command": "x"}]}
    )
    assert problem(text, "wf.json") == f'workflow file "wf.json": {expected}'


def test_json_schema_accepts_role_secrets_and_secret_params() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    import yaml

    jsonschema.validate(yaml.safe_load(SECRETS_YAML), workflow_json_schema())


# ---- where a problem is -------------------------------------------------------------------


def test_each_field_problem_gives_its_line_and_column_in_yaml() -> None:
    text = """\
id: m
schedule: "0 24 * * *"
tasks:
  - id: a
    command: x
    timeout: abc
  - command: y
    retires: 2
"""
    message = located(text, "m.yaml")
    assert '(1) schedule: "0 24 * * *" is not a valid cron expression' in message
    assert "is not valid (0-23) (line 2, column 11)" in message
    assert 'got "abc" (line 6, column 14)' in message  # the value
    assert (
        'unknown field "retires" (did you mean "retries"?) (line 8, column 5)' in message
    )  # the key
    assert 'tasks[1]: missing required field "id" (line 7, column 5)' in message  # its mapping


def test_each_problem_gives_its_line_and_column_in_json_graph_problems_too() -> None:
    text = (
        '{\n  "id": "j",\n  "tasks": [\n    {"id": "a", "command": "x"},\n'
        '    {"id": "b", "command": "y", "depends": ["zz"]}\n  ]\n}\n'
    )
    message = located(text, "j.json")
    assert message.endswith(
        'tasks[1] (id "b").depends: unknown task "zz" (no task has this id) (line 5, column 44)'
    )
