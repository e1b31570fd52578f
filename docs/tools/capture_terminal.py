"""Regenerate the terminal captures shown in README.md (`make captures`).

Runs `stratoflow run examples/flaky/flaky.yaml` in a detached tmux session of a fixed size
on a fresh home, captures the screen once while the run goes (a frame showing a retry
pending and a failed task) and once at the end, and writes both between the
`<!-- capture:flaky -->` markers of README.md (and docs/captures/flaky-run.txt).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SESSION = "stratoflow-capture"
WIDTH, HEIGHT = 100, 16
MARK = re.compile(r"(<!-- capture:flaky -->\n).*?(<!-- /capture:flaky -->)", re.S)


def _tmux(*args: str) -> str:
    return subprocess.run(["tmux", *args], check=True, capture_output=True, text=True).stdout


def _screen() -> str:
    lines = _tmux("capture-pane", "-p", "-t", SESSION).splitlines()
    return "\n".join(line.rstrip() for line in lines).strip("\n")


def capture() -> tuple[str, str]:
    if shutil.which("tmux") is None:
        sys.exit("tmux is needed: apt-get install -y tmux")
    stratoflow = Path(sys.executable).parent / "stratoflow"
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "examples").symlink_to(ROOT / "examples")
        command = (
            f"cd {tmp} && STRATOFLOW_HOME={tmp}/home {stratoflow} run examples/flaky/flaky.yaml;"
            " code=$?; echo; echo exit $code; sleep 600"
        )
        _tmux("new-session", "-d", "-s", SESSION, "-x", str(WIDTH), "-y", str(HEIGHT), command)
        try:
            during = ""
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                screen = _screen()
                if not during and "up_for_retry" in screen and "failed: doomed" in screen:
                    during = screen
                if re.search(r"^exit \d+$", screen, re.M):
                    return during, screen
                time.sleep(0.05)
            sys.exit(f"the run did not end in 60 s; the screen:\n{_screen()}")
        finally:
            subprocess.run(["tmux", "kill-session", "-t", SESSION], check=False)


def main() -> None:
    during, end = capture()
    text = f"While it runs:\n\n```text\n{during}\n```\n\nAt the end:\n\n```text\n{end}\n```\n"
    out = ROOT / "docs" / "captures" / "flaky-run.txt"
    out.parent.mkdir(exist_ok=True)
    out.write_text(f"{during}\n\n{end}\n")
    readme = ROOT / "README.md"
    body = readme.read_text()
    if not MARK.search(body):
        sys.exit("README.md has no <!-- capture:flaky --> markers")
    readme.write_text(MARK.sub(lambda m: m.group(1) + text + m.group(2), body))
    print(f"wrote {out.relative_to(ROOT)} and README.md's capture")


if __name__ == "__main__":
    main()
