"""Start one of our Python emulators (``python -m agex.dev.emulators.<name>``) for a test module, through the
launcher the local stack uses (``agex.dev.emulators.gcloud.start_python_emulator``), and check that it stops
cleanly."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from agex.dev.emulators.gcloud import start_python_emulator

REPO_ROOT = Path(__file__).resolve().parents[1]


@contextlib.contextmanager
def python_emulator(module: str, *args: str, ready_timeout: float = 30.0) -> Iterator[str]:
    """Yield the READY line; on exit stop the emulator with SIGTERM, and fail if it did not exit cleanly
    (with 0, within 10 s)."""
    fd, log = tempfile.mkstemp(prefix=f"agex-{module.rsplit('.', 1)[-1]}-", suffix=".log")
    os.close(fd)
    try:
        proc = start_python_emulator(module, args, log_path=log, timeout=ready_timeout, cwd=str(REPO_ROOT))
        try:
            yield proc.ready_line
        finally:
            proc.stop(grace=10.0)
        if proc.popen.returncode != 0:
            raise RuntimeError(f"{module} exited with {proc.popen.returncode} after SIGTERM (SIGKILL after 10 s "
                               f"is -9); its log:\n{proc.log_tail()}")
    finally:
        with contextlib.suppress(OSError):
            os.unlink(log)
