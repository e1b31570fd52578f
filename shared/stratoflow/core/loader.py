"""Reading a workflow file: strict JSON or YAML, validated, every problem in one message.

The only I/O is reading the file in `load_workflow`; everything else works on text.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Callable, Sequence
from pathlib import Path, PurePath
from typing import Any, NamedTuple

import yaml
from pydantic import BaseModel, ValidationError

from stratoflow.core.dag import GraphError, GraphProblem, graph_problems
from stratoflow.core.model import Task, TaskDefaults, Workflow

MAX_LISTED_PROBLEMS = 10
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class WorkflowFileError(Exception):
    """A workflow file that cannot be used; `message` says why in one readable paragraph."""

    exit_code = 2  # the CLI's exit status for a bad input file

    def __init__(self, path: str, problems: Sequence[str]) -> None:
        self.path = path
        self.problems = tuple(problems)
        self.message = _paragraph(path, self.problems)
        super().__init__(self.message)

    def __str__(self) -> str:
        return self.message


def load_workflow(path: str | Path) -> Workflow:
    """Read, parse and validate a workflow file (.json, .yaml or .yml).

    Raises WorkflowFileError for a missing or unreadable file, malformed text or an
    invalid workflow.
    """
    name = str(path)
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        raise WorkflowFileError(name, ["the file does not exist"]) from None
    except IsADirectoryError:
        raise WorkflowFileError(name, ["this is a directory, not a file"]) from None
    except OSError as err:
        raise WorkflowFileError(name, [f"cannot read the file: {err.strerror}"]) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise WorkflowFileError(
            name, [f"the file is not UTF-8 text (byte {raw[err.start]:#04x} at offset {err.start})"]
        ) from None
    return load_workflow_text(text, name)


def load_workflow_text(text: str, filename: str) -> Workflow:
    """Parse and validate a workflow's text; the extension of `filename` picks the format.

    Raises WorkflowFileError; its message names `filename`.
    """
    # Editors on Windows may start a file with a byte order mark; strict JSON refuses it.
    text = text.removeprefix("\ufeff")
    suffix = PurePath(filename).suffix.lower()
    parse = _PARSERS.get(suffix)
    if parse is None:
        given = f'extension "{suffix}"' if suffix else "no extension"
        raise WorkflowFileError(filename, [f"the file has {given}; name it .json, .yaml or .yml"])
    data = parse(text, filename)
    if not isinstance(data, dict):
        what = "empty" if data is None else f"a {_kind(data)}"
        raise WorkflowFileError(
            filename, [f"the file is {what}; it must hold a mapping with id and tasks"]
        )
    try:
        return Workflow.model_validate(data)
    except ValidationError as err:
        raise WorkflowFileError(filename, _validation_problems(err, data, text)) from err


def workflow_json_schema() -> dict[str, Any]:
    """JSON Schema of a workflow file, for editors (durations are a number or a string)."""
    schema = Workflow.model_json_schema()
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        **schema,
        "title": "stratoflow workflow",
        "description": (
            "A DAG of shell-command tasks with trigger rules, retries and an optional cron "
            "schedule, run by stratoflow."
        ),
    }


# ---- parsing ---------------------------------------------------------------------------


class _DuplicateKey(ValueError):
    def __init__(self, key: str) -> None:
        self.key = key
        super().__init__(key)


def _unique_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _DuplicateKey(key)
        result[key] = value
    return result


def _reject_constant(name: str) -> Any:
    raise ValueError(name)


def _parse_json(text: str, filename: str) -> Any:
    try:
        return json.loads(text, object_pairs_hook=_unique_pairs, parse_constant=_reject_constant)
    except json.JSONDecodeError as err:
        problem = f"invalid JSON at line {err.lineno}, column {err.colno}: {err.msg}"
    except _DuplicateKey as err:
        problem = _json_duplicate_key_problem(text, err.key)
    except RecursionError:
        problem = "invalid JSON: nested too deeply"
    except ValueError:
        # parse_constant (NaN, Infinity), or an integer too long for Python to convert.
        problem = _json_bad_number_problem(text)
    raise WorkflowFileError(filename, [problem])


# A JSON string, a bracket, or a non-standard constant. Matching strings whole means the
# brackets and constants found are never inside one. Only used after a parse has failed.
_JSON_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|[{}\[\]]|-?Infinity|NaN')
_JSON_SPACE = re.compile(r"[ \t\r\n]*")


def _json_duplicate_key_problem(text: str, key: str) -> str:
    """Find the second occurrence of a key within one object, to name its line."""
    objects: list[dict[str, int] | None] = []  # per open bracket: key offsets; None: array
    for token in _JSON_TOKEN.finditer(text):
        value = token.group()
        if value in ("{", "["):
            objects.append({} if value == "{" else None)
        elif value in ("}", "]"):
            objects.pop()
        elif value.startswith('"') and _followed_by_colon(text, token.end()):
            seen = objects[-1]
            name = json.loads(value)
            if seen is not None and name in seen:
                line, column = _line_column(text, token.start())
                first_line, _ = _line_column(text, seen[name])
                return (
                    f'duplicate key "{name}" at line {line}, column {column} '
                    f"(first at line {first_line})"
                )
            if seen is not None:
                seen[name] = token.start()
    return f'duplicate key "{key}"'


def _followed_by_colon(text: str, offset: int) -> bool:
    """Whether a JSON string ending at `offset` is an object key."""
    space = _JSON_SPACE.match(text, offset)
    return space is not None and text.startswith(":", space.end())


def _json_bad_number_problem(text: str) -> str:
    for token in _JSON_TOKEN.finditer(text):
        if token.group() in ("NaN", "Infinity", "-Infinity"):
            line, column = _line_column(text, token.start())
            return (
                f"invalid JSON at line {line}, column {column}: {token.group()} is not a JSON "
                "number; write a finite number"
            )
    return "invalid JSON: a number has too many digits to read"


def _line_column(text: str, offset: int) -> tuple[int, int]:
    line = text.count("\n", 0, offset) + 1
    return line, offset - (text.rfind("\n", 0, offset) + 1) + 1


# libyaml's parser is several times faster than the pure-Python one (10,000-task files).
_YamlBase: type = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_YAML_MERGE = "tag:yaml.org,2002:merge"


class _UniqueKeyLoader(_YamlBase):  # type: ignore[misc]
    """yaml.safe_load's loader, except that a key repeated in one mapping is an error."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        # Compared as written (tag and text), before construction, because constructing
        # every key twice costs a third of the load time of a 10,000-task file. Keys that
        # differ only in spelling ("1" and "01") escape this check, but any key that is not
        # a string is rejected by validation anyway.
        first_seen: dict[tuple[str, str], yaml.Node] = {}
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == _YAML_MERGE:
                continue  # "<<: *defaults" may be overridden by the mapping's own keys
            first = first_seen.setdefault((key_node.tag, key_node.value), key_node)
            if first is not key_node:
                raise yaml.constructor.ConstructorError(
                    problem=(
                        f'duplicate key "{key_node.value}" '
                        f"(first at line {first.start_mark.line + 1})"
                    ),
                    problem_mark=key_node.start_mark,
                )
        return super().construct_mapping(node, deep=deep)  # type: ignore[no-any-return]


def _parse_yaml(text: str, filename: str) -> Any:
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader subclass: safe
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        context = f" ({err.context})" if err.context else ""
        problem = f"invalid YAML{where}: {err.problem}{context}"
    except yaml.YAMLError as err:
        problem = f"invalid YAML: {err}"
    except ValueError as err:
        # Raised while building a value PyYAML resolved by its looks: `2024-13-01` as a
        # date, a 5,000-digit integer, `!!int abc`. PyYAML gives no position for these.
        problem = f"invalid YAML: a value cannot be read ({err}); quote it to keep it as text"
    except RecursionError:
        problem = "invalid YAML: nested too deeply"
    raise WorkflowFileError(filename, [problem])


_PARSERS: dict[str, Callable[[str, str], Any]] = {
    ".json": _parse_json,
    ".yaml": _parse_yaml,
    ".yml": _parse_yaml,
}


# ---- validation messages --------------------------------------------------------------


def _validation_problems(err: ValidationError, data: dict[str, Any], text: str) -> list[str]:
    """Each problem, located in the file: its field's path, then its line and column."""
    where = _Locator(text)
    problems: list[str] = []
    graph_checked = False
    for error in err.errors(include_url=False):
        cause = error.get("ctx", {}).get("error")
        if isinstance(cause, GraphError):
            problems.extend(_graph_problem(p, where) for p in cause.problems)
            graph_checked = True
        else:
            loc = tuple(error["loc"])
            on_key = error["type"] in ("extra_forbidden", "invalid_key")
            problems.append(_field_problem(error, data) + where(loc, on_key=on_key))
    if not graph_checked:
        # Pydantic checks the graph only once every field is valid; check what we can now
        # so that one run reports, say, a bad timeout and a cycle together.
        problems.extend(_graph_problem(p, where) for p in _raw_graph_problems(data))
    return problems


def _graph_problem(problem: GraphProblem, where: _Locator) -> str:
    if problem.task_index is None:
        return str(problem) + where(("tasks",))
    loc = ("tasks", problem.task_index, problem.field or "id")
    return str(problem) + where(loc)


class _Locator:
    """Where a field is in the file's text, as ` (line L, column C)`. The text is composed
    again (YAML's node tree keeps positions; JSON is read as YAML for this) only when a
    problem is to be located, so valid files pay nothing."""

    def __init__(self, text: str) -> None:
        self._text = text
        self._root: yaml.Node | None = None
        self._composed = False

    def __call__(self, loc: tuple[Any, ...], *, on_key: bool = False) -> str:
        if not self._composed:
            self._composed = True
            try:
                self._root = yaml.compose(self._text, Loader=_YamlBase)
            except (yaml.YAMLError, ValueError, RecursionError):
                self._root = None
        node = self._root
        if node is None:
            return ""
        for i, part in enumerate(loc):
            if isinstance(node, yaml.MappingNode):
                found = [(k, v) for k, v in node.value if getattr(k, "value", None) == str(part)]
                if not found:
                    break  # a missing field, or pydantic's own step (a union's member)
                key, value = found[-1]
                node = key if on_key and i == len(loc) - 1 else value
            elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
                if part >= len(node.value):
                    break
                node = node.value[part]
            else:
                break
        mark = node.start_mark
        return f" (line {mark.line + 1}, column {mark.column + 1})"


class _RawTask(NamedTuple):
    id: str
    depends: Sequence[str]


def _raw_graph_problems(data: dict[str, Any]) -> list[GraphProblem]:
    tasks = data.get("tasks")
    if not isinstance(tasks, list):
        return []
    nodes: list[_RawTask] = []
    for task in tasks:
        if not isinstance(task, dict) or not isinstance(task.get("id"), str):
            return []
        depends = task.get("depends", [])
        depends = [depends] if isinstance(depends, str) else depends
        if not isinstance(depends, list) or not all(isinstance(d, str) for d in depends):
            return []
        nodes.append(_RawTask(task["id"], depends))
    return graph_problems(nodes)


def _field_problem(error: Any, data: dict[str, Any]) -> str:
    loc: tuple[Any, ...] = tuple(error["loc"])
    kind: str = error["type"]
    if kind == "extra_forbidden":
        return _at(loc[:-1], data) + f'unknown field "{loc[-1]}"' + _suggestion(loc, data)
    if kind == "missing":
        return _at(loc[:-1], data) + f'missing required field "{loc[-1]}"'
    if kind == "invalid_key":  # YAML allows `1: x`; field names are text
        return _at(loc[:-1], data) + f"field name {_show(loc[-1])} must be a string"
    explanation = _explain(kind, error)
    if kind == "value_error":
        return _at(loc, data) + explanation  # our validators already quote the value
    return _at(loc, data) + f"{explanation}, got {_show(_raw_value(data, loc, error['input']))}"


def _explain(kind: str, error: Any) -> str:
    ctx: dict[str, Any] = error.get("ctx", {})
    loc = error["loc"]
    if kind == "value_error":
        return str(ctx["error"])
    if kind == "string_pattern_mismatch" and loc and loc[-1] == "id":
        return (
            "an id must start with a letter or digit and hold only letters, digits, "
            "'_', '.' and '-' (at most 128 characters)"
        )
    fixed = {
        "enum": "must be one of {expected}",
        "literal_error": "must be {expected}",
        "greater_than": "must be greater than {gt}",
        "greater_than_equal": "must be at least {ge}",
        "less_than": "must be less than {lt}",
        "less_than_equal": "must be at most {le}",
        "string_pattern_mismatch": "must match {pattern}",
        "string_too_short": "must not be empty",
        "too_short": "must have at least {min_length} item(s)",
        "string_type": "must be a string (in YAML, quote it)",
        "int_type": "must be a whole number",
        "int_parsing": "must be a whole number",
        "int_from_float": "must be a whole number",
        "float_type": "must be a number",
        "float_parsing": "must be a number",
        "bool_type": "must be true or false",
        "bool_parsing": "must be true or false",
        "list_type": "must be a list",
        "dict_type": "must be a mapping",
        "model_type": "must be a mapping of field names to values",
        "model_attributes_type": "must be a mapping of field names to values",
    }
    template = fixed.get(kind)
    if template is None:
        message: str = error["msg"]
        return message[:1].lower() + message[1:]
    values = {name: _number_text(value) for name, value in ctx.items()}
    if "expected" in values:
        values["expected"] = str(values["expected"]).replace("'", "")
    return template.format(**values)


def _at(loc: tuple[Any, ...], data: dict[str, Any]) -> str:
    """`tasks[2] (id "load").timeout: ` for a location, naming the task by its id."""
    text = ""
    for position, part in enumerate(loc):
        if isinstance(part, int):
            text += f"[{part}]"
            if position == 1 and loc[0] == "tasks":
                text += _task_name(data, part)
        elif part == "[key]":
            text += " (key)"
        elif _IDENTIFIER.match(str(part)):
            text += f".{part}" if text else str(part)
        else:
            text += f"[{json.dumps(str(part))}]"
    return f"{text}: " if text else ""


def _task_name(data: dict[str, Any], index: int) -> str:
    tasks = data.get("tasks")
    task = tasks[index] if isinstance(tasks, list) and index < len(tasks) else None
    task_id = task.get("id") if isinstance(task, dict) else None
    return f' (id "{task_id}")' if isinstance(task_id, str) else ""


def _raw_value(data: Any, loc: tuple[Any, ...], fallback: Any) -> Any:
    """The value as written in the file (pydantic may report it converted, "0s" as 0.0)."""
    value = data
    for part in loc:
        in_mapping = isinstance(value, dict) and part in value
        in_list = isinstance(value, list) and isinstance(part, int) and part < len(value)
        if not (in_mapping or in_list):
            return fallback
        value = value[part]
    return value


def _suggestion(loc: tuple[Any, ...], data: dict[str, Any]) -> str:
    model: type[BaseModel] = Workflow
    if loc[:1] == ("defaults",):
        model = TaskDefaults
    elif loc[:1] == ("tasks",):
        model = Task
    close = difflib.get_close_matches(str(loc[-1]), list(model.model_fields), n=1)
    return f' (did you mean "{close[0]}"?)' if close else ""


def _show(value: Any) -> str:
    """A short rendering of a value from the file; never huge, never multi-line."""
    if isinstance(value, str):
        shown = json.dumps(value[:60], ensure_ascii=False)
        return shown[:-1] + '..."' if len(value) > 60 else shown
    if value is None or isinstance(value, bool | int | float):
        return json.dumps(value)
    if isinstance(value, list | dict) and not value:
        return "[]" if isinstance(value, list) else "{}"
    return f"a {_kind(value)}"


def _kind(value: Any) -> str:
    if isinstance(value, dict):
        return "mapping"
    if isinstance(value, list):
        return "list"
    return type(value).__name__


def _number_text(value: Any) -> Any:
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _paragraph(path: str, problems: Sequence[str]) -> str:
    """One paragraph naming the file; several problems are numbered, and capped for reading."""
    flat = [" ".join(problem.split()) for problem in problems]
    if len(flat) == 1:
        return f'workflow file "{path}": {flat[0]}'
    listed = "; ".join(f"({n}) {p}" for n, p in enumerate(flat[:MAX_LISTED_PROBLEMS], start=1))
    more = len(flat) - MAX_LISTED_PROBLEMS
    rest = f"; and {more} more" if more > 0 else ""
    return f'workflow file "{path}" has {len(flat)} problems: {listed}{rest}'
