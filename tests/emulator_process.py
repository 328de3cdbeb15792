"""Start one of our Python emulators (``python -m agex.dev.emulators.<name>``) for a test module and wait for the
READY line it prints; stdout keeps being drained so the emulator never blocks on a full pipe."""

from __future__ import annotations

import contextlib
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


@contextlib.contextmanager
def python_emulator(module: str, *args: str, ready_timeout: float = 30.0) -> Iterator[str]:
    """Yield the READY line; on exit stop the emulator with SIGTERM, and fail if it did not exit cleanly."""
    proc = subprocess.Popen([sys.executable, "-m", module, *args], cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True)
    lines: queue.Queue[str] = queue.Queue()
    assert proc.stdout is not None
    stdout = proc.stdout
    threading.Thread(target=lambda: [lines.put(line) for line in stdout], daemon=True).start()
    try:
        try:
            line = lines.get(timeout=ready_timeout)
        except queue.Empty:
            raise RuntimeError(f"{module} did not print READY within {ready_timeout:g} s") from None
        if not line.startswith("READY"):
            raise RuntimeError(f"{module} printed {line!r} instead of READY")
        yield line.strip()
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise RuntimeError(f"{module} did not stop within 10 s of SIGTERM") from None
    if code != 0:
        raise RuntimeError(f"{module} exited with {code} after SIGTERM")
