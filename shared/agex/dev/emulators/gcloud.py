"""Start and stop emulators for tests and local development: the Google Cloud SDK's (Firestore, Pub/Sub) and
our own Python ones (``start_python_emulator``: Cloud Tasks, Secret Manager, Gemini), the one launcher of both.

Each emulator runs as its own process group bound to 127.0.0.1, so :meth:`EmulatorProcess.stop` kills
the whole tree (the ``gcloud`` wrapper spawns a shell and a JVM). By default the emulator jars shipped
with the SDK are started directly with ``java``, which skips ``gcloud``'s Python start-up; the
``gcloud`` wrapper is the fallback when the jars or ``java`` cannot be found (``method="gcloud"``
forces it).

    with start_firestore() as fs, start_pubsub("my-project") as ps:
        os.environ["FIRESTORE_EMULATOR_HOST"] = fs.host_port
        os.environ["PUBSUB_EMULATOR_HOST"] = ps.host_port

    with start_python_emulator("agex.dev.emulators.gemini", ["--port", "0", "--scenarios", "DIR"]) as gemini:
        print(gemini.endpoints["http"])            # from its READY line: "127.0.0.1:PORT"

Only the standard library is imported here.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Literal

__all__ = [
    "EmulatorError",
    "EmulatorNotInstalled",
    "EmulatorProcess",
    "free_port",
    "reset_firestore",
    "spawn_and_wait",
    "sdk_root",
    "start_firestore",
    "start_pubsub",
    "start_python_emulator",
]

HOST = "127.0.0.1"
Method = Literal["auto", "jar", "gcloud"]

_FIRESTORE_JAR = "platform/cloud-firestore-emulator/cloud-firestore-emulator.jar"
_FIRESTORE_MAIN = "com.google.cloud.datastore.emulator.firestore.CloudFirestore"
_PUBSUB_LIB = "platform/pubsub-emulator/lib"
_STOP_GRACE_S = 5.0


class EmulatorError(RuntimeError):
    """An emulator could not be found, did not come up, or died."""


class EmulatorNotInstalled(EmulatorError):
    """Neither the emulator's jar (with ``java``) nor ``gcloud`` is installed."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the caller races other processes for it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def sdk_root() -> Path | None:
    """The Cloud SDK's root directory: ``$CLOUDSDK_ROOT_DIR``, or found from the ``gcloud`` on PATH."""
    env = os.environ.get("CLOUDSDK_ROOT_DIR")
    candidates = [Path(env)] if env else []
    gcloud = shutil.which("gcloud")
    if gcloud:
        # /usr/bin/gcloud -> /usr/lib/google-cloud-sdk/bin/gcloud
        candidates.append(Path(os.path.realpath(gcloud)).parent.parent)
    candidates += [Path("/usr/lib/google-cloud-sdk"), Path("/usr/share/google-cloud-sdk")]
    for c in candidates:
        if (c / "platform").is_dir():
            return c
    return None


class EmulatorProcess:
    """A started emulator. ``host_port`` is ``"127.0.0.1:PORT"``; ``stop()`` (or leaving the ``with``
    block) kills its process group. Stopping twice is harmless."""

    def __init__(
        self, name: str, popen: subprocess.Popen[bytes], port: int, log_path: str, *, owns_log: bool
    ) -> None:
        self.name = name
        self.popen = popen
        self.port = port
        self.host = HOST
        self.log_path = log_path
        self.started_s: float | None = None
        """Seconds from spawning the process to the emulator answering."""
        self.ready_line = ""
        """What one of our Python emulators printed when it was ready: ``READY grpc=HOST:PORT ...``."""
        self._owns_log = owns_log
        self._stopped = False
        self._lock = threading.Lock()
        _LIVE.add(self)

    @property
    def host_port(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def endpoints(self) -> dict[str, str]:
        """The ``kind=HOST:PORT`` pairs of the READY line: ``{"grpc": "127.0.0.1:8123", "http": ...}``."""
        return dict(_ENDPOINT.findall(self.ready_line))

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, n: int = 40) -> str:
        return _tail(self.log_path, n)

    def stop(self, grace: float = _STOP_GRACE_S) -> None:
        """SIGTERM the process group, SIGKILL it after ``grace`` seconds if anything is left."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
        _LIVE.discard(self)
        pgid = self.popen.pid  # start_new_session=True: the child leads its own group
        _killpg(pgid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            self.popen.poll()
            if not _group_alive(pgid):
                break
            time.sleep(0.05)
        else:
            _killpg(pgid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=grace)
        if self._owns_log:
            with contextlib.suppress(OSError):
                os.unlink(self.log_path)

    def __enter__(self) -> EmulatorProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "stopped" if self._stopped else ("running" if self.alive() else "exited")
        return f"<EmulatorProcess {self.name} {self.host_port} pid={self.pid} {state}>"


_LIVE: set[EmulatorProcess] = set()


@atexit.register
def _stop_all() -> None:
    """Safety net: no emulator outlives the interpreter that started it."""
    for proc in list(_LIVE):
        with contextlib.suppress(Exception):
            proc.stop(grace=2.0)


def _killpg(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _tail(path: str, n: int) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 16_384))
            lines = f.read().decode("utf-8", "replace").splitlines()
    except OSError as e:
        return f"(no log: {e})"
    return "\n".join(lines[-n:])


def _http_ok(url: str, timeout: float = 1.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - loopback only
            return resp.status == 200 and resp.read(16).strip().startswith(b"Ok")
    except (urllib.error.URLError, OSError, ValueError):
        return False


def _java() -> str | None:
    java_home = os.environ.get("JAVA_HOME")
    if java_home and os.access(os.path.join(java_home, "bin", "java"), os.X_OK):
        return os.path.join(java_home, "bin", "java")
    return shutil.which("java")


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        # as the servers bind (gunicorn, the JVM, grpc all set it): connections of a previous run left in
        # TIME_WAIT do not make the port busy, so `agex dev` restarts at once
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((HOST, port))
        except OSError:
            return False
        return True


def _pdeathsig_prefix() -> list[str]:
    """On Linux, ``setpriv --pdeathsig TERM`` makes the kernel stop the emulator if the process that
    started it dies without stopping it (a killed test run). The signal follows the *thread* that
    spawned the child, so it is only used when starting from the main thread."""
    setpriv = shutil.which("setpriv")
    if setpriv and threading.current_thread() is threading.main_thread() and os.uname().sysname == "Linux":
        return [setpriv, "--pdeathsig", "TERM", "--"]
    return []


def spawn_and_wait(
    name: str,
    argv: Sequence[str],
    port: int,
    log_path: str | None,
    timeout: float,
    *,
    ready: Callable[[], bool] | None = None,
    env: dict[str, str] | None = None,
    cwd: str | None = None,
) -> EmulatorProcess:
    """Start ``argv`` in its own process group with its output in ``log_path`` and wait until
    ``ready()`` (default: ``GET http://127.0.0.1:port/`` answers "Ok", as the SDK emulators do). A
    process that exits or is not ready within ``timeout`` raises ``EmulatorError`` with its log tail."""
    if not _port_free(port):
        raise EmulatorError(f"{name} emulator: port {HOST}:{port} is already in use")
    owns_log = log_path is None
    if log_path is None:
        fd, log_path = tempfile.mkstemp(prefix=f"agex-{name}-emulator-", suffix=".log")
        os.close(fd)
    argv = [*_pdeathsig_prefix(), *argv]
    t0 = time.monotonic()
    try:
        with open(log_path, "ab") as log:
            popen = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                cwd=cwd or tempfile.gettempdir(),
                env=env,
            )
    except OSError as e:
        if owns_log:
            with contextlib.suppress(OSError):
                os.unlink(log_path)
        raise EmulatorError(f"{name} emulator could not be started (command not found?): {argv[0]}: {e}") from e
    proc = EmulatorProcess(name, popen, port, log_path, owns_log=owns_log)
    url = f"http://{HOST}:{port}/"
    is_ready = ready or (lambda: _http_ok(url))
    answering = f"answering on {url}" if port else "saying it was ready"
    unready = f"did not answer on {url}" if port else "did not say it was ready"
    deadline = t0 + timeout
    delay = 0.05
    while True:
        if is_ready() and proc.alive():  # alive: the answer is ours, not another process's
            proc.started_s = time.monotonic() - t0
            return proc
        if not proc.alive():
            tail = proc.log_tail()
            proc._owns_log = False  # keep the log for the message's reader
            proc.stop()
            raise EmulatorError(
                f"{name} emulator exited with code {popen.returncode} before {answering}; "
                f"command: {' '.join(argv)}; log {log_path}:\n{tail}"
            )
        if time.monotonic() > deadline:
            tail = proc.log_tail()
            proc._owns_log = False
            proc.stop()
            raise EmulatorError(
                f"{name} emulator {unready} within {timeout:.0f}s; "
                f"command: {' '.join(argv)}; log {log_path}:\n{tail}"
            )
        time.sleep(delay)
        delay = min(delay * 1.5, 0.25)


def _start(
    name: str,
    argv_for: Callable[[int], list[str]],
    port: int | None,
    log_path: str | None,
    timeout: float,
) -> EmulatorProcess:
    """Start with a given or picked port; a picked port lost to a race is retried with a new one."""
    attempts = 1 if port is not None else 3
    last: EmulatorError | None = None
    for _ in range(attempts):
        p = port if port is not None else free_port()
        try:
            return spawn_and_wait(name, argv_for(p), p, log_path, timeout)
        except EmulatorError as e:
            last = e
            if "already in use" not in str(e).lower() and "bindexception" not in str(e).lower():
                raise
    assert last is not None
    raise last


def _firestore_argv(method: Method) -> tuple[str, Callable[[int], list[str]]]:
    root = sdk_root()
    java = _java()
    jar = root / _FIRESTORE_JAR if root else None
    if method in ("auto", "jar") and java and jar and jar.is_file():
        def argv(p: int) -> list[str]:
            return [
                java, "-Duser.language=en", "-cp", str(jar), _FIRESTORE_MAIN, "start",
                f"--host={HOST}", f"--port={p}",
            ]  # fmt: skip
        return "jar", argv
    if method == "jar":
        raise EmulatorNotInstalled(f"Firestore emulator jar or java not found (SDK root {root}, java {java})")
    gcloud = shutil.which("gcloud")
    if not gcloud:
        raise EmulatorNotInstalled(
            "neither the Firestore emulator jar nor gcloud was found; install the Cloud SDK and run "
            "`gcloud components install cloud-firestore-emulator`"
        )

    def argv_g(p: int) -> list[str]:
        return [gcloud, "emulators", "firestore", "start", f"--host-port={HOST}:{p}", "--quiet"]

    return "gcloud", argv_g


def _pubsub_argv(method: Method, project: str) -> tuple[str, Callable[[int], list[str]]]:
    root = sdk_root()
    java = _java()
    lib = root / _PUBSUB_LIB if root else None
    jars = sorted(lib.glob("cloud-pubsub-emulator-*.jar")) if lib and lib.is_dir() else []
    if method in ("auto", "jar") and java and jars:
        def argv(p: int) -> list[str]:
            # No --projects: like the gcloud wrapper (and the Firestore emulator), accept every project.
            return [java, "-jar", str(jars[-1]), f"--host={HOST}", f"--port={p}"]
        return "jar", argv
    if method == "jar":
        raise EmulatorNotInstalled(f"Pub/Sub emulator jar or java not found (SDK root {root}, java {java})")
    gcloud = shutil.which("gcloud")
    if not gcloud:
        raise EmulatorNotInstalled(
            "neither the Pub/Sub emulator jar nor gcloud was found; install the Cloud SDK and run "
            "`gcloud components install pubsub-emulator`"
        )

    def argv_g(p: int) -> list[str]:
        return [
            gcloud, "beta", "emulators", "pubsub", "start", f"--host-port={HOST}:{p}",
            f"--project={project}", "--quiet",
        ]  # fmt: skip

    return "gcloud", argv_g


def start_firestore(
    port: int | None = None,
    log_path: str | None = None,
    timeout: float = 60,
    *,
    method: Method = "auto",
) -> EmulatorProcess:
    """Start the Firestore emulator (native mode) on 127.0.0.1 and wait until it answers ``Ok``.

    ``method``: ``"jar"`` runs the SDK's jar with ``java`` (faster), ``"gcloud"`` the ``gcloud
    emulators firestore start`` wrapper, ``"auto"`` (default) the jar when present, else gcloud.
    The emulator keeps data in memory only; it accepts every project id.
    """
    used, argv = _firestore_argv(method)
    proc = _start("firestore", argv, port, log_path, timeout)
    proc.name = f"firestore({used})"
    return proc


def start_pubsub(
    project: str,
    port: int | None = None,
    log_path: str | None = None,
    timeout: float = 60,
    *,
    method: Method = "auto",
) -> EmulatorProcess:
    """Start the Pub/Sub emulator on 127.0.0.1 and wait until it answers ``Ok``. ``project`` is what
    ``gcloud`` is told; the emulator serves every project, and holds topics and messages in memory."""
    used, argv = _pubsub_argv(method, project)
    proc = _start("pubsub", argv, port, log_path, timeout)
    proc.name = f"pubsub({used})"
    return proc


_ENDPOINT = re.compile(r"(\w+)=([\w.-]+:\d+)")


def start_python_emulator(
    module: str,
    args: Sequence[str] = (),
    *,
    name: str | None = None,
    log_path: str | None = None,
    timeout: float = 60,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
) -> EmulatorProcess:
    """Start one of our emulators, ``python -m module *args`` (``agex.dev.emulators.cloudtasks``,
    ``.secretmanager``, ``.gemini``) with this interpreter, and wait for the ``READY kind=HOST:PORT ...`` line
    it prints on stdout once it serves. ``args`` say where it binds (``--port 0`` lets it pick a port: the
    process's ``port`` and ``endpoints`` are read from its READY line). Its output goes to ``log_path``
    (appended to: only a READY line written by this start counts), or to a temporary file removed on
    ``stop()``; ``env`` defaults to this process's, unbuffered. ``stop()`` sends SIGTERM, which our
    emulators answer by exiting 0."""
    name = name or module.rsplit(".", 1)[-1]
    owns_log = log_path is None
    if log_path is None:
        fd, log_path = tempfile.mkstemp(prefix=f"agex-{name}-emulator-", suffix=".log")
        os.close(fd)
    path, offset = log_path, os.path.getsize(log_path) if os.path.exists(log_path) else 0

    def ready_line() -> str | None:
        try:
            with open(path, "rb") as f:
                f.seek(offset)
                text = f.read().decode("utf-8", "replace")
        except OSError:
            return None
        # a whole line only: one caught half written would name half a port
        return next((line.strip() for line in text.splitlines(keepends=True)
                     if line.startswith("READY") and line.endswith("\n")), None)

    try:
        # port 0: whether the port is free is the emulator's to say (it exits, and the error shows its log)
        proc = spawn_and_wait(name, [sys.executable, "-m", module, *args], 0, path, timeout,
                              ready=lambda: ready_line() is not None,
                              env={**(os.environ if env is None else env), "PYTHONUNBUFFERED": "1"}, cwd=cwd)
    except BaseException:
        if owns_log:
            with contextlib.suppress(OSError):
                os.unlink(path)  # its tail is in the error
        raise
    proc._owns_log = owns_log
    proc.ready_line = ready_line() or ""
    ports = [int(hp.rsplit(":", 1)[1]) for hp in proc.endpoints.values()]
    proc.port = ports[0] if ports else 0
    return proc


def reset_firestore(host_port: str, project: str, database: str = "(default)", timeout: float = 10) -> None:
    """Delete every document of ``project``'s database in the Firestore emulator at ``host_port``."""
    url = f"http://{host_port}/emulator/v1/projects/{project}/databases/{database}/documents"
    req = urllib.request.Request(url, method="DELETE")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 - emulator endpoint
            if resp.status != 200:
                raise EmulatorError(f"resetting Firestore emulator at {url}: HTTP {resp.status}")
    except urllib.error.URLError as e:
        raise EmulatorError(f"resetting Firestore emulator at {url}: {e}") from e
