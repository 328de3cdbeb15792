"""File-armed failpoints (the adapter of ``agex.ports.failpoints``), for chaos drills.

Like etcd's gofail or TiKV's fail-rs: ``hit("step.after_model")`` does nothing unless the file named
by ``AGEX_FAILPOINTS_FILE`` lists that point. Each line is ``<point> <action>``: ``kill`` (SIGKILL
this process, the crash a lost Cloud Run instance looks like), or another word that ``hit`` returns for
the code at that point to act on (``step.lease_renewal stall``: the attempt stops renewing its lease). A
line fires once: it is removed from the file before the process dies, so the restarted process gets
past it.
"""

from __future__ import annotations

import fcntl
import os
import signal


class FileFailpoints:
    """The failpoints armed in one file (``AGEX_FAILPOINTS_FILE``), re-read at each hit so a drill can arm
    a point while the process runs."""

    def __init__(self, path: str) -> None:
        self.path = path

    def hit(self, point: str) -> str | None:
        """Die for ``kill``, return any other action; None when ``point`` is not armed."""
        return _fire(self.path, point)


def _fire(path: str, point: str) -> str | None:
    if not os.path.exists(path):
        return None
    with open(path, "r+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        lines = f.read().splitlines()
        match = next((i for i, line in enumerate(lines) if line.split()[:1] == [point]), None)
        if match is None:
            return None
        action = lines[match].split()[1] if len(lines[match].split()) > 1 else "kill"
        del lines[match]
        f.seek(0)
        f.truncate()
        f.write("".join(line + "\n" for line in lines))
        f.flush()
        os.fsync(f.fileno())
    if action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    return action
