"""Mermaid and DOT pictures of a workflow's task graph."""

from __future__ import annotations

import re

from stratoflow.core.loader import load_workflow_text
from stratoflow.core.model import Task, Workflow
from stratoflow.core.render import render_dot, render_mermaid

DIAMOND = """\
id: etl
tasks:
  - {id: extract, command: x}
  - {id: clean-up, command: x, depends: extract}
  - {id: audit.v2, command: x, depends: extract}
  - {id: end, command: x, depends: [clean-up, audit.v2]}
"""


def mermaid_edges(text: str) -> set[tuple[str, str]]:
    """Edges of a rendered flowchart as (upstream label, downstream label)."""
    labels = dict(re.findall(r'^\s+(\w+)\["(.*)"\]$', text, flags=re.MULTILINE))
    edges = re.findall(r"^\s+(\w+) --> (\w+)$", text, flags=re.MULTILINE)
    return {(labels[up], labels[down]) for up, down in edges}


def test_mermaid_is_a_top_down_flowchart() -> None:
    assert render_mermaid(load_workflow_text(DIAMOND, "etl.yaml")).startswith("flowchart TD\n")


def test_mermaid_draws_edges_from_upstream_to_downstream() -> None:
    text = render_mermaid(load_workflow_text(DIAMOND, "etl.yaml"))

    assert mermaid_edges(text) == {
        ("extract", "clean-up"),
        ("extract", "audit.v2"),
        ("clean-up", "end"),
        ("audit.v2", "end"),
    }


def test_mermaid_node_names_avoid_reserved_words() -> None:
    text = render_mermaid(load_workflow_text(DIAMOND, "etl.yaml"))

    assert '["end"]' in text
    assert not re.search(r"^\s+end\b", text, flags=re.MULTILINE)


def test_mermaid_labels_escape_quotes_and_markup() -> None:
    # model_construct skips validation: the renderer must be safe on its own.
    task = Task.model_construct(id='a"<b>', command="x", depends=[])
    workflow = Workflow.model_construct(id="w", tasks=[task])

    text = render_mermaid(workflow)

    assert '["a#34;#60;b#62;"]' in text


def test_dot_is_a_digraph_named_after_the_workflow() -> None:
    text = render_dot(load_workflow_text(DIAMOND, "etl.yaml"))

    assert text.startswith('digraph "etl" {\n')
    assert text.rstrip().endswith("}")


def test_dot_draws_quoted_edges_from_upstream_to_downstream() -> None:
    text = render_dot(load_workflow_text(DIAMOND, "etl.yaml"))

    for edge in (
        '"extract" -> "clean-up";',
        '"extract" -> "audit.v2";',
        '"clean-up" -> "end";',
        '"audit.v2" -> "end";',
    ):
        assert edge in text


def test_dot_escapes_quotes_in_ids() -> None:
    task = Task.model_construct(id='a"b', command="x", depends=[])
    workflow = Workflow.model_construct(id="w", tasks=[task])

    assert '"a\\"b";' in render_dot(workflow)
