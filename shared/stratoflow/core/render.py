"""Pictures of a workflow's task graph: Mermaid for Markdown, DOT for Graphviz.

Edges run upstream --> downstream, the direction work flows.
"""

from __future__ import annotations

from stratoflow.core.model import Workflow


def render_mermaid(workflow: Workflow) -> str:
    """A Mermaid `flowchart TD` of the workflow's tasks, labelled with their ids."""
    # Node names are generated (t0, t1, ...) rather than taken from task ids: Mermaid
    # reserves words such as "end" and gives "-" and "." meaning in node names.
    node = {task.id: f"t{index}" for index, task in enumerate(workflow.tasks)}
    lines = ["flowchart TD"]
    lines += [f'    {node[task.id]}["{_mermaid_text(task.id)}"]' for task in workflow.tasks]
    lines += [
        f"    {node[dep]} --> {node[task.id]}" for task in workflow.tasks for dep in task.depends
    ]
    return "\n".join(lines) + "\n"


def render_dot(workflow: Workflow) -> str:
    """A Graphviz `digraph` of the workflow's tasks, every id quoted."""
    lines = [f"digraph {_dot_quote(workflow.id)} {{", "    rankdir=TB;"]
    lines += [f"    {_dot_quote(task.id)};" for task in workflow.tasks]
    lines += [
        f"    {_dot_quote(dep)} -> {_dot_quote(task.id)};"
        for task in workflow.tasks
        for dep in task.depends
    ]
    lines.append("}")
    return "\n".join(lines) + "\n"


def _mermaid_text(text: str) -> str:
    # Mermaid decodes "#<number>;" in labels; encoding everything but plain characters
    # keeps quotes, brackets and HTML out of the diagram's syntax.
    return "".join(ch if ch.isalnum() or ch in "_.- " else f"#{ord(ch)};" for ch in text)


def _dot_quote(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'
