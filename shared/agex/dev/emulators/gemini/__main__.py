"""Command line: ``python -m agex.dev.emulators.gemini --host 127.0.0.1 --port PORT --scenarios DIR``.

Prints exactly one ``READY http=HOST:PORT`` line on stdout once it accepts connections
(PORT is the bound port, so ``--port 0`` picks a free one), and exits 0 on SIGTERM or
SIGINT. Invalid scenario files make it exit 2 before READY, with the file named on stderr.
"""

from __future__ import annotations

import sys

from agex.dev.emulators import scripted

from . import DEFAULT_SCENARIOS_DIR
from .server import EmulatorApp


def main(argv: list[str] | None = None) -> int:
    return scripted.main("gemini", __doc__ or "", argv, lambda scenarios, args: EmulatorApp(
        scenarios, latency_ms=args.latency_ms, log_size=args.log_size, keep_bodies=args.keep_bodies),
        DEFAULT_SCENARIOS_DIR)


if __name__ == "__main__":
    sys.exit(main())
