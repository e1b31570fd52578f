"""The embedded emulator's own process: `python -m stratoflow.local.emulator_server`.

Run apart from the engine so that moto's request handling (pure Python) and the engine's
clients use both cores instead of sharing one interpreter lock. It prints one JSON line,
with its endpoint or why it could not start, then serves until its standard input closes
(its parent ended).
"""

from __future__ import annotations

import json
import logging
import signal
import sys


def main() -> None:
    # A terminal's Ctrl-C reaches the whole foreground process group, this process too;
    # its engine must still record its stop here, and ends this process by closing stdin.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        from moto.server import ThreadedMotoServer

        from stratoflow.local.emulator import patch_moto

        patch_moto()  # RuntimeError on a moto it was not written for
    except ImportError as exc:
        _say({"error": f"{exc}; pip install 'stratoflow[emulator]'"})
        sys.exit(1)
    except RuntimeError as exc:
        _say({"error": str(exc)})
        sys.exit(1)
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    host, bound = server.get_host_and_port()
    _say({"endpoint_url": f"http://{host}:{bound}"})
    sys.stdin.read()  # returns at EOF: the parent closed the pipe or died
    server.stop()


def _say(answer: dict[str, str]) -> None:
    sys.stdout.write(json.dumps(answer) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
