"""The embedded emulator's own process: `python -m stratoflow.local.emulator_server`.

Run apart from the engine so that moto's request handling (pure Python) and the engine's
clients use both cores instead of sharing one interpreter lock. It prints one JSON line
with its endpoint, then serves until its standard input closes (its parent ended).
"""

from __future__ import annotations

import json
import logging
import sys


def main() -> None:
    from moto.server import ThreadedMotoServer

    from stratoflow.local.emulator import speed_up_moto

    speed_up_moto()
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    host, bound = server.get_host_and_port()
    sys.stdout.write(json.dumps({"endpoint_url": f"http://{host}:{bound}"}) + "\n")
    sys.stdout.flush()
    sys.stdin.read()  # returns at EOF: the parent closed the pipe or died
    server.stop()


if __name__ == "__main__":
    main()
