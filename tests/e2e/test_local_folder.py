"""What `local up` says about the files of its folder: rejected files by their path, and
two files declaring one workflow id (neither silently wins)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from stratoflow.local.runtime import LocalRuntime
from stratoflow.local.server import FolderServer


def _workflow(workflow_id: str, echo: str) -> str:
    return f"id: {workflow_id}\ntasks:\n  - id: t\n    command: echo {echo}\n"


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[FolderServer, list[str], Path]]:
    folder = tmp_path / "flows"
    folder.mkdir()
    said: list[str] = []
    server = FolderServer(
        folder,
        LocalRuntime(state_dir=tmp_path / "home", pump=False),
        say=said.append,
        api_port=None,
    )
    server.start()
    try:
        yield server, said, folder
    finally:
        server.shutdown(0)


def _active_source(server: FolderServer, workflow_id: str) -> str:
    ports = server.runtime.ports
    assert ports is not None
    meta = ports.definitions.get_meta(workflow_id)
    assert meta is not None and meta.active_version is not None
    return ports.definitions.list_versions(workflow_id)[meta.active_version - 1]["source"]


def test_a_rejected_file_is_named_by_its_path(
    served: tuple[FolderServer, list[str], Path],
) -> None:
    server, said, folder = served
    bad = folder / "sub" / "bad.yaml"
    bad.parent.mkdir()
    bad.write_text('id: a\ntasks:\n  - id: t\n    command: echo\n    depends: ["[a]"]\n')
    said.clear()
    server.scan()
    assert said == [
        f'error: workflow file "{bad}": tasks[0] (id "t").depends: unknown task "[a]" '
        "(no task has this id) (line 5, column 14)"
    ]


def test_two_files_with_one_id_the_first_stays_until_the_clash_is_fixed(
    served: tuple[FolderServer, list[str], Path],
) -> None:
    server, said, folder = served
    ports = server.runtime.ports
    assert ports is not None
    (folder / "a.yaml").write_text(_workflow("dup", "from-a"))
    server.scan()
    (folder / "b.yaml").write_text(_workflow("dup", "from-b"))
    said.clear()
    server.scan()
    # b is refused, said and recorded (`stratoflow workflows` lists it); a stays active
    assert len(said) == 1 and said[0].startswith(f"error: {folder / 'b.yaml'} declares")
    assert "a.yaml stays active" in said[0]
    [error] = ports.definitions.source_errors()
    assert error["source"].endswith("workflows/b.yaml") and "'dup'" in error["message"]
    assert _active_source(server, "dup").endswith("workflows/a.yaml")
    server.scan()  # nothing changed: nothing said again
    assert len(said) == 1

    # a takes another id: b's turn comes, and its error is cleared
    (folder / "a.yaml").write_text(_workflow("other", "from-a"))
    server.scan()
    assert _active_source(server, "other").endswith("workflows/a.yaml")
    assert _active_source(server, "dup").endswith("workflows/b.yaml")
    assert ports.definitions.source_errors() == []


def test_removing_the_first_file_lets_the_refused_one_register(
    served: tuple[FolderServer, list[str], Path],
) -> None:
    server, said, folder = served
    (folder / "a.yaml").write_text(_workflow("dup", "from-a"))
    (folder / "b.yaml").write_text(_workflow("dup", "from-b"))
    server.scan()  # in name order: a first
    assert any("b.yaml declares workflow id 'dup'" in s for s in said)
    (folder / "a.yaml").unlink()
    said.clear()
    server.scan()
    assert said[-1] == "registered dup v2 from b.yaml"
    assert _active_source(server, "dup").endswith("workflows/b.yaml")
