"""End-to-end tests of the Cloud Tasks emulator through the unmodified google-cloud-tasks client."""

from __future__ import annotations

import datetime
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import google.auth.transport.requests
import grpc
import pytest
import requests
from google.api_core import exceptions as api_exceptions
from google.cloud import tasks_v2
from google.cloud.tasks_v2.services.cloud_tasks.transports import CloudTasksGrpcTransport
from google.oauth2 import id_token
from google.protobuf import duration_pb2, field_mask_pb2

from agex.dev.emulators.cloudtasks import protos
from agex.dev.emulators.cloudtasks.config import EmulatorConfig
from agex.dev.emulators.cloudtasks.errors import ApiError
from agex.dev.emulators.cloudtasks.retry import RetryPolicy, backoff_after, should_give_up
from agex.dev.emulators.cloudtasks.state import Store

REPO_ROOT = Path(__file__).resolve().parents[2]
PROJECT = "test-project"
LOCATION = "us-central1"
PARENT = f"projects/{PROJECT}/locations/{LOCATION}"


# -- emulator process -----------------------------------------------------------


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Emulator:
    proc: subprocess.Popen[str]
    grpc_addr: str
    http_addr: str

    @property
    def http_base(self) -> str:
        return f"http://{self.http_addr}"

    def stop(self, timeout: float = 10.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()


def start_emulator(*extra: str) -> Emulator:
    grpc_port, http_port = _free_port(), _free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "agex.dev.emulators.cloudtasks",
            "--host",
            "127.0.0.1",
            "--port",
            str(grpc_port),
            "--http-port",
            str(http_port),
            "--min-dispatch-deadline-seconds",
            "1",
            *extra,
        ],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    assert proc.stdout is not None
    stdout = proc.stdout

    def pump() -> None:
        # Keeps draining stdout so the emulator never blocks on a full pipe.
        for line in stdout:
            lines.put(line)

    threading.Thread(target=pump, daemon=True).start()
    try:
        line = lines.get(timeout=30)
    except queue.Empty:
        proc.kill()
        raise RuntimeError("emulator did not print READY in time") from None
    expected = f"READY grpc=127.0.0.1:{grpc_port} http=127.0.0.1:{http_port}\n"
    if line != expected:
        proc.kill()
        raise RuntimeError(f"unexpected first line {line!r}, expected {expected!r}")
    return Emulator(proc, f"127.0.0.1:{grpc_port}", f"127.0.0.1:{http_port}")


@pytest.fixture(scope="module")
def emulator() -> Iterator[Emulator]:
    emu = start_emulator()
    yield emu
    assert emu.stop() == 0


@pytest.fixture(scope="module")
def client(emulator: Emulator) -> Iterator[tasks_v2.CloudTasksClient]:
    channel = grpc.insecure_channel(emulator.grpc_addr)
    yield tasks_v2.CloudTasksClient(transport=CloudTasksGrpcTransport(channel=channel))
    channel.close()


# -- HTTP target ----------------------------------------------------------------


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]  # lower-cased names
    body: bytes
    started: float  # time.monotonic() in this process
    finished: float | None = None  # when the handler was about to answer


class Target:
    """A local task handler that records requests and answers as planned per path."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._received: list[Received] = []
        self._plans: dict[str, list[tuple[int, float]]] = {}
        target = self

        class Handler(BaseHTTPRequestHandler):
            def _handle(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                record = Received(
                    self.command,
                    self.path,
                    {k.lower(): v for k, v in self.headers.items()},
                    body,
                    started=time.monotonic(),
                )
                with target._cond:
                    plan = target._plans.get(record.path.split("?")[0])
                    status, delay = plan.pop(0) if plan else (200, 0.0)
                    target._received.append(record)
                    target._cond.notify_all()
                time.sleep(delay)
                with target._cond:
                    # Taken before answering: the emulator cannot see the
                    # response, and so cannot start the next attempt, earlier.
                    record.finished = time.monotonic()
                    target._cond.notify_all()
                try:
                    self.send_response(status)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                except OSError:
                    pass  # the emulator gave up waiting (dispatch deadline)

            do_POST = do_GET = do_PUT = do_PATCH = do_DELETE = _handle  # noqa: N815

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}{path}"

    def plan(self, path: str, *responses: tuple[int, float]) -> None:
        with self._cond:
            self._plans[path] = list(responses)

    def received(self, path: str) -> list[Received]:
        with self._cond:
            return [r for r in self._received if r.path.split("?")[0] == path]

    def wait_for(
        self, path: str, count: int, timeout: float = 10.0, *, answered: bool = True
    ) -> list[Received]:
        """The first ``count`` requests to ``path`` in arrival order, once they arrived (and were answered)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                got = [r for r in self._received if r.path.split("?")[0] == path]
                ready = [r for r in got if r.finished is not None or not answered]
                if len(ready) >= count:
                    return sorted(got, key=lambda r: r.started)[:count]
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"{path}: got {len(ready)} requests, wanted {count}")
                self._cond.wait(remaining)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture(scope="module")
def target() -> Iterator[Target]:
    t = Target()
    yield t
    t.close()


# -- helpers ----------------------------------------------------------------------


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def make_queue(
    client: tasks_v2.CloudTasksClient,
    prefix: str,
    *,
    rate_limits: tasks_v2.RateLimits | None = None,
    retry_config: tasks_v2.RetryConfig | None = None,
    paused: bool = False,
) -> str:
    name = f"{PARENT}/queues/{unique(prefix)}"
    client.create_queue(
        parent=PARENT, queue=tasks_v2.Queue(name=name, rate_limits=rate_limits, retry_config=retry_config)
    )
    if paused:
        client.pause_queue(name=name)
    return name


def http_task(url: str, *, name: str | None = None, body: bytes = b"", **fields: object) -> tasks_v2.Task:
    return tasks_v2.Task(
        name=name or "",
        http_request=tasks_v2.HttpRequest(url=url, http_method=tasks_v2.HttpMethod.POST, body=body),
        **fields,
    )


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0, interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(interval)


def task_gone(client: tasks_v2.CloudTasksClient, name: str) -> Callable[[], bool]:
    def check() -> bool:
        try:
            client.get_task(name=name)
        except api_exceptions.NotFound:
            return True
        return False

    return check


def fast_retry(
    max_attempts: int = 5, min_backoff: float = 0.1, max_backoff: float = 1.0, max_doublings: int = 16
) -> tasks_v2.RetryConfig:
    return tasks_v2.RetryConfig(
        max_attempts=max_attempts,
        min_backoff=duration_pb2.Duration(nanos=int(min_backoff * 1e9) % 10**9, seconds=int(min_backoff)),
        max_backoff=duration_pb2.Duration(seconds=int(max_backoff), nanos=int(max_backoff * 1e9) % 10**9),
        max_doublings=max_doublings,
    )


# -- pure retry arithmetic ----------------------------------------------------------


def test_backoff_matches_documented_example() -> None:
    policy = RetryPolicy(
        max_attempts=-1, max_retry_duration=0, min_backoff=10, max_backoff=300, max_doublings=3
    )
    assert [backoff_after(n, policy) for n in range(1, 10)] == [10, 20, 40, 80, 160, 240, 300, 300, 300]


def test_give_up_needs_every_configured_limit() -> None:
    def policy(attempts: int, duration: float) -> RetryPolicy:
        return RetryPolicy(attempts, duration, 0.1, 1, 16)

    assert should_give_up(3, 0, policy(3, 0))
    assert not should_give_up(2, 0, policy(3, 0))
    assert not should_give_up(10**6, 10**6, policy(-1, 0))
    assert should_give_up(1, 61, policy(-1, 60))
    assert not should_give_up(3, 30, policy(3, 60))
    assert should_give_up(3, 61, policy(3, 60))


def test_store_project_restriction_and_dedupe_window_expiry() -> None:
    store = Store(EmulatorConfig(project=PROJECT, dedupe_window_seconds=0.2))
    other = "projects/someone-else/locations/us-central1"
    with pytest.raises(ApiError) as err:
        store.create_queue(other, protos.Queue(name=f"{other}/queues/q"))
    assert err.value.code == grpc.StatusCode.PERMISSION_DENIED

    queue_name = f"{PARENT}/queues/q"
    store.create_queue(PARENT, protos.Queue(name=queue_name))
    task = protos.Task(name=f"{queue_name}/tasks/t")
    task.http_request.url = "http://127.0.0.1:9/x"
    store.create_task(queue_name, task, protos.VIEW_BASIC)
    store.delete_task(task.name)
    with pytest.raises(ApiError) as err:
        store.create_task(queue_name, task, protos.VIEW_BASIC)
    assert err.value.code == grpc.StatusCode.ALREADY_EXISTS
    time.sleep(0.3)
    assert store.create_task(queue_name, task, protos.VIEW_BASIC).name == task.name


# -- queues -----------------------------------------------------------------------------


def test_queue_defaults_and_crud(client: tasks_v2.CloudTasksClient) -> None:
    name = f"{PARENT}/queues/{unique('crud')}"
    created = client.create_queue(parent=PARENT, queue=tasks_v2.Queue(name=name))
    assert created.name == name
    assert created.state == tasks_v2.Queue.State.RUNNING
    assert created.rate_limits.max_dispatches_per_second == 500
    assert created.rate_limits.max_concurrent_dispatches == 1000
    assert created.rate_limits.max_burst_size == 100
    rc = created.retry_config
    assert rc.max_attempts == 100
    assert rc.min_backoff == datetime.timedelta(seconds=0.1)
    assert rc.max_backoff == datetime.timedelta(seconds=3600)
    assert rc.max_doublings == 16
    assert rc.max_retry_duration == datetime.timedelta(0)

    assert client.get_queue(name=name) == created
    with pytest.raises(api_exceptions.AlreadyExists):
        client.create_queue(parent=PARENT, queue=tasks_v2.Queue(name=name))

    assert client.pause_queue(name=name).state == tasks_v2.Queue.State.PAUSED
    assert client.get_queue(name=name).state == tasks_v2.Queue.State.PAUSED
    assert client.resume_queue(name=name).state == tasks_v2.Queue.State.RUNNING

    client.delete_queue(name=name)
    with pytest.raises(api_exceptions.NotFound):
        client.get_queue(name=name)
    with pytest.raises(api_exceptions.NotFound):
        client.delete_queue(name=name)


def test_queue_validation(client: tasks_v2.CloudTasksClient) -> None:
    with pytest.raises(api_exceptions.InvalidArgument, match="Queue name must be formatted"):
        client.create_queue(parent=PARENT, queue=tasks_v2.Queue(name=f"{PARENT}/queues/bad_name!"))
    with pytest.raises(api_exceptions.InvalidArgument, match="less than or equal to 500"):
        client.create_queue(
            parent=PARENT,
            queue=tasks_v2.Queue(
                name=f"{PARENT}/queues/{unique('rate')}",
                rate_limits=tasks_v2.RateLimits(max_dispatches_per_second=600),
            ),
        )
    with pytest.raises(api_exceptions.InvalidArgument, match="minBackoff must be less than or equal"):
        client.create_queue(
            parent=PARENT,
            queue=tasks_v2.Queue(
                name=f"{PARENT}/queues/{unique('backoff')}",
                retry_config=fast_retry(min_backoff=5, max_backoff=1),
            ),
        )
    with pytest.raises(api_exceptions.InvalidArgument):
        client.create_queue(
            parent=PARENT, queue=tasks_v2.Queue(name=f"projects/{PROJECT}/locations/elsewhere/queues/q")
        )


def test_list_queues_paging_and_state_filter(client: tasks_v2.CloudTasksClient) -> None:
    location = f"projects/{PROJECT}/locations/{unique('loc')}"
    names = sorted(f"{location}/queues/q{i}" for i in range(5))
    for n in names:
        client.create_queue(parent=location, queue=tasks_v2.Queue(name=n))
    client.pause_queue(name=names[1])

    first = client.list_queues(request={"parent": location, "page_size": 2})
    assert [q.name for q in first] == names  # the pager follows next_page_token
    raw = client.list_queues(request={"parent": location, "page_size": 2}).pages
    assert [len(page.queues) for page in raw] == [2, 2, 1]
    paused = client.list_queues(request={"parent": location, "filter": "state: PAUSED"})
    assert [q.name for q in paused] == [names[1]]


def test_update_queue_mask_and_upsert(client: tasks_v2.CloudTasksClient) -> None:
    name = make_queue(client, "upd", retry_config=fast_retry(max_attempts=7))
    updated = client.update_queue(
        queue=tasks_v2.Queue(
            name=name,
            rate_limits=tasks_v2.RateLimits(max_dispatches_per_second=10),
            retry_config=fast_retry(max_attempts=1),
        ),
        update_mask=field_mask_pb2.FieldMask(paths=["rate_limits.max_dispatches_per_second"]),
    )
    assert updated.rate_limits.max_dispatches_per_second == 10
    assert updated.rate_limits.max_burst_size == 2
    assert updated.rate_limits.max_concurrent_dispatches == 1000
    assert updated.retry_config.max_attempts == 7  # not in the mask

    fresh = f"{PARENT}/queues/{unique('upsert')}"
    created = client.update_queue(queue=tasks_v2.Queue(name=fresh))
    assert created.state == tasks_v2.Queue.State.RUNNING
    assert client.get_queue(name=fresh).rate_limits.max_dispatches_per_second == 500


def test_purge_queue_removes_all_tasks(client: tasks_v2.CloudTasksClient, target: Target) -> None:
    name = make_queue(client, "purge", paused=True)
    for _ in range(3):
        client.create_task(parent=name, task=http_task(target.url("/purge")))
    assert len(list(client.list_tasks(parent=name))) == 3
    purged = client.purge_queue(name=name)
    assert purged.purge_time is not None and purged.purge_time.timestamp() > 0
    assert list(client.list_tasks(parent=name)) == []
    client.resume_queue(name=name)
    time.sleep(0.3)
    assert target.received("/purge") == []


# -- tasks ------------------------------------------------------------------------------


def test_task_crud_views_and_paging(client: tasks_v2.CloudTasksClient, target: Target) -> None:
    queue_name = make_queue(client, "tasks", paused=True)
    task_name = f"{queue_name}/tasks/my-task_1"
    created = client.create_task(
        request=tasks_v2.CreateTaskRequest(
            parent=queue_name,
            task=http_task(target.url("/never"), name=task_name, body=b'{"a":1}'),
            response_view=tasks_v2.Task.View.FULL,
        )
    )
    assert created.name == task_name
    assert created.http_request.body == b'{"a":1}'
    assert created.view == tasks_v2.Task.View.FULL
    assert created.dispatch_deadline == datetime.timedelta(minutes=10)
    assert created.dispatch_count == 0 and created.response_count == 0
    assert abs(created.schedule_time.timestamp() - time.time()) < 5
    assert created.create_time.timestamp() <= time.time()
    assert created.http_request.headers["User-Agent"] == "Google-Cloud-Tasks"

    basic = client.get_task(name=task_name)
    assert basic.view == tasks_v2.Task.View.BASIC
    assert basic.http_request.body == b""
    assert basic.http_request.url == target.url("/never")
    full = client.get_task(request={"name": task_name, "response_view": tasks_v2.Task.View.FULL})
    assert full.http_request.body == b'{"a":1}'

    generated = [
        client.create_task(parent=queue_name, task=http_task(target.url("/never"))) for _ in range(4)
    ]
    for g in generated:
        assert g.name.startswith(f"{queue_name}/tasks/")
        assert g.name.rsplit("/", 1)[1].isdigit()
    pages = list(client.list_tasks(request={"parent": queue_name, "page_size": 2}).pages)
    assert [len(p.tasks) for p in pages] == [2, 2, 1]
    listed = {t.name for p in pages for t in p.tasks}
    assert listed == {task_name, *(g.name for g in generated)}

    client.delete_task(name=task_name)
    with pytest.raises(api_exceptions.NotFound, match="existed recently"):
        client.get_task(name=task_name)
    with pytest.raises(api_exceptions.NotFound):
        client.delete_task(name=task_name)
    with pytest.raises(api_exceptions.NotFound):
        client.get_task(name=f"{queue_name}/tasks/never-existed")


def test_task_validation(client: tasks_v2.CloudTasksClient, target: Target) -> None:
    queue_name = make_queue(client, "invalid", paused=True)
    with pytest.raises(api_exceptions.NotFound, match="Queue does not exist"):
        client.create_task(parent=f"{PARENT}/queues/missing", task=http_task(target.url("/x")))
    with pytest.raises(api_exceptions.InvalidArgument, match="url"):
        client.create_task(parent=queue_name, task=http_task("ftp://example.com/x"))
    with pytest.raises(api_exceptions.InvalidArgument, match="App Engine"):
        client.create_task(
            parent=queue_name,
            task=tasks_v2.Task(app_engine_http_request=tasks_v2.AppEngineHttpRequest(relative_uri="/x")),
        )
    with pytest.raises(api_exceptions.InvalidArgument, match="dispatchDeadline"):
        client.create_task(
            parent=queue_name,
            task=http_task(target.url("/x"), dispatch_deadline=duration_pb2.Duration(nanos=500_000_000)),
        )
    with pytest.raises(api_exceptions.InvalidArgument, match="dispatchDeadline"):
        client.create_task(
            parent=queue_name,
            task=http_task(target.url("/x"), dispatch_deadline=duration_pb2.Duration(seconds=3600)),
        )
    with pytest.raises(api_exceptions.InvalidArgument, match="Task ID"):
        client.create_task(
            parent=queue_name, task=http_task(target.url("/x"), name=f"{queue_name}/tasks/a b")
        )
    with pytest.raises(api_exceptions.InvalidArgument, match="must be the same"):
        client.create_task(
            parent=queue_name, task=http_task(target.url("/x"), name=f"{PARENT}/queues/other/tasks/t")
        )
    with pytest.raises(api_exceptions.InvalidArgument, match="body"):
        client.create_task(
            parent=queue_name,
            task=tasks_v2.Task(
                http_request=tasks_v2.HttpRequest(
                    url=target.url("/x"), http_method=tasks_v2.HttpMethod.GET, body=b"x"
                )
            ),
        )


def test_dedupe_existing_deleted_and_completed(client: tasks_v2.CloudTasksClient, target: Target) -> None:
    paused = make_queue(client, "dedupe-p", paused=True)
    existing = f"{paused}/tasks/existing"
    client.create_task(parent=paused, task=http_task(target.url("/dedupe"), name=existing))
    with pytest.raises(api_exceptions.AlreadyExists):
        client.create_task(parent=paused, task=http_task(target.url("/dedupe"), name=existing))
    client.delete_task(name=existing)
    with pytest.raises(api_exceptions.AlreadyExists):
        client.create_task(parent=paused, task=http_task(target.url("/dedupe"), name=existing))

    running = make_queue(client, "dedupe-r")
    done = f"{running}/tasks/completed"
    client.create_task(parent=running, task=http_task(target.url("/dedupe-done"), name=done))
    target.wait_for("/dedupe-done", 1)
    wait_until(task_gone(client, done))
    with pytest.raises(api_exceptions.AlreadyExists):
        client.create_task(parent=running, task=http_task(target.url("/dedupe-done"), name=done))
    # The same id in another queue is a different task.
    client.create_task(parent=paused, task=http_task(target.url("/dedupe"), name=f"{paused}/tasks/completed"))


# -- dispatch ------------------------------------------------------------------------------


def test_dispatch_request_headers_and_stats(
    client: tasks_v2.CloudTasksClient, target: Target, emulator: Emulator
) -> None:
    queue_name = make_queue(client, "headers")
    task_name = f"{queue_name}/tasks/hdr-1"
    created = client.create_task(
        parent=queue_name,
        task=tasks_v2.Task(
            name=task_name,
            http_request=tasks_v2.HttpRequest(
                url=target.url("/headers?x=1"),
                http_method=tasks_v2.HttpMethod.PUT,
                headers={"Content-Type": "application/json", "X-Custom": "yes", "User-Agent": "mine"},
                body=b'{"hello":"world"}',
            ),
        ),
    )
    (req,) = target.wait_for("/headers", 1)
    assert req.method == "PUT"
    assert req.path == "/headers?x=1"
    assert req.body == b'{"hello":"world"}'
    h = req.headers
    assert h["content-type"] == "application/json"
    assert h["x-custom"] == "yes"
    assert h["user-agent"] == "Google-Cloud-Tasks"
    assert h["x-cloudtasks-queuename"] == queue_name.rsplit("/", 1)[1]
    assert h["x-cloudtasks-taskname"] == "hdr-1"
    assert h["x-cloudtasks-taskretrycount"] == "0"
    assert h["x-cloudtasks-taskexecutioncount"] == "0"
    assert abs(float(h["x-cloudtasks-tasketa"]) - created.schedule_time.timestamp()) < 1e-3
    assert "x-cloudtasks-taskpreviousresponse" not in h
    assert "x-cloudtasks-taskretryreason" not in h
    assert "authorization" not in h

    wait_until(task_gone(client, task_name))
    assert requests.get(f"{emulator.http_base}/healthz", timeout=5).status_code == 200
    stats = requests.get(f"{emulator.http_base}/v1/stats", timeout=5).json()["queues"][queue_name]
    assert stats["tasks"] == 0
    assert stats["in_flight"] == 0
    assert stats["dispatched"] == 1
    assert stats["succeeded"] == 1
    assert stats["failed_attempts"] == 0


def test_schedule_time_is_respected(client: tasks_v2.CloudTasksClient, target: Target) -> None:
    queue_name = make_queue(client, "sched")
    eta = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=1.5)
    created_at = time.monotonic()
    task = client.create_task(parent=queue_name, task=http_task(target.url("/sched"), schedule_time=eta))
    assert abs(task.schedule_time.timestamp() - eta.timestamp()) < 1e-3
    time.sleep(0.8)
    assert target.received("/sched") == []
    assert client.get_task(name=task.name).dispatch_count == 0
    (req,) = target.wait_for("/sched", 1, timeout=5)
    assert req.started - created_at >= 1.4
    assert float(req.headers["x-cloudtasks-tasketa"]) == pytest.approx(eta.timestamp(), abs=1e-3)


def test_paused_queue_dispatches_only_after_resume(client: tasks_v2.CloudTasksClient, target: Target) -> None:
    queue_name = make_queue(client, "pause", paused=True)
    client.create_task(parent=queue_name, task=http_task(target.url("/paused")))
    time.sleep(0.5)
    assert target.received("/paused") == []
    client.resume_queue(name=queue_name)
    target.wait_for("/paused", 1, timeout=5)


def test_run_task_dispatches_now(client: tasks_v2.CloudTasksClient, target: Target) -> None:
    queue_name = make_queue(client, "run", paused=True)
    later = datetime.datetime.now(datetime.UTC) + datetime.timedelta(hours=1)
    task = client.create_task(parent=queue_name, task=http_task(target.url("/run"), schedule_time=later))
    ran = client.run_task(name=task.name)
    assert ran.name == task.name
    assert ran.dispatch_count == 1
    assert ran.first_attempt.dispatch_time is not None
    target.wait_for("/run", 1, timeout=5)
    wait_until(task_gone(client, task.name))
    with pytest.raises(api_exceptions.NotFound):
        client.run_task(name=task.name)


def test_run_task_dispatches_again_while_an_attempt_is_still_running(
    client: tasks_v2.CloudTasksClient, target: Target
) -> None:
    # "Cloud Tasks will dispatch the task, even if the task is already running": two attempts at once
    queue_name = make_queue(client, "rerun")
    target.plan("/rerun", (200, 1.5), (409, 0))
    task = client.create_task(parent=queue_name, task=http_task(target.url("/rerun")))
    (first,) = target.wait_for("/rerun", 1, answered=False)
    ran = client.run_task(name=task.name)
    assert ran.dispatch_count == 2
    first_again, second = target.wait_for("/rerun", 2)  # both answered
    assert first_again is first and first.finished is not None
    assert second.started < first.finished, "the second attempt ran while the first was still running"
    assert [r.headers["x-cloudtasks-taskretrycount"] for r in (first, second)] == ["0", "1"]
    assert first.headers["x-cloudtasks-taskname"] == second.headers["x-cloudtasks-taskname"]
    # the refused attempt does not reschedule the task while the first runs; the first one's success ends it
    wait_until(task_gone(client, task.name))
    time.sleep(0.5)
    assert len(target.received("/rerun")) == 2


def test_retries_follow_backoff_and_drop_after_max_attempts(
    client: tasks_v2.CloudTasksClient, target: Target, emulator: Emulator
) -> None:
    # 0.1s doubled twice (0.1, 0.2, 0.4), then +0.4 linear (0.8) capped at max_backoff 0.5.
    queue_name = make_queue(client, "retry", retry_config=fast_retry(5, 0.1, 0.5, max_doublings=2))
    target.plan("/retry", (404, 0), (500, 0), (503, 0), (429, 0), (500, 0), (200, 0))
    task_name = f"{queue_name}/tasks/flaky"
    client.create_task(parent=queue_name, task=http_task(target.url("/retry"), name=task_name))
    attempts = target.wait_for("/retry", 5)
    wait_until(task_gone(client, task_name))
    time.sleep(0.7)
    assert len(target.received("/retry")) == 5  # dropped after max_attempts, the 200 is never reached

    headers = [a.headers for a in attempts]
    assert [h["x-cloudtasks-taskretrycount"] for h in headers] == ["0", "1", "2", "3", "4"]
    # Only non-5xx responses count as executions (404 then 429).
    assert [h["x-cloudtasks-taskexecutioncount"] for h in headers] == ["0", "1", "1", "1", "2"]
    assert [h.get("x-cloudtasks-taskpreviousresponse") for h in headers] == [None, "404", "500", "503", "429"]
    assert all(h.get("x-cloudtasks-taskretryreason") for h in headers[1:])
    gaps = [b.started - (a.finished or 0.0) for a, b in zip(attempts, attempts[1:], strict=False)]
    for gap, expected in zip(gaps, [0.1, 0.2, 0.4, 0.5], strict=True):
        assert expected * 0.9 <= gap <= expected + 0.5, (gaps, expected)
    stats = requests.get(f"{emulator.http_base}/v1/stats", timeout=5).json()["queues"][queue_name]
    assert stats["dispatched"] == 5 and stats["failed_attempts"] == 5 and stats["succeeded"] == 0
    with pytest.raises(api_exceptions.AlreadyExists):
        client.create_task(parent=queue_name, task=http_task(target.url("/retry"), name=task_name))


def test_failed_attempt_is_recorded_then_retry_succeeds(
    client: tasks_v2.CloudTasksClient, target: Target
) -> None:
    queue_name = make_queue(client, "recover", retry_config=fast_retry(5, 0.5, 1))
    target.plan("/recover", (503, 0), (200, 0))
    task = client.create_task(parent=queue_name, task=http_task(target.url("/recover")))
    target.wait_for("/recover", 1)
    time.sleep(0.15)
    seen = client.get_task(name=task.name)
    assert seen.dispatch_count == 1
    assert seen.response_count == 1
    assert seen.last_attempt.response_status.code == grpc.StatusCode.UNAVAILABLE.value[0]
    assert seen.schedule_time.timestamp() > seen.last_attempt.dispatch_time.timestamp()
    target.wait_for("/recover", 2)
    wait_until(task_gone(client, task.name))


def test_dispatch_deadline_fails_slow_attempt(client: tasks_v2.CloudTasksClient, target: Target) -> None:
    queue_name = make_queue(client, "deadline", retry_config=fast_retry(3, 0.1, 0.2))
    target.plan("/slow", (200, 2.5), (200, 0))
    task = client.create_task(
        parent=queue_name,
        task=http_task(target.url("/slow"), dispatch_deadline=duration_pb2.Duration(seconds=1)),
    )
    first, second = target.wait_for("/slow", 2, timeout=6, answered=False)
    # The emulator stopped waiting after ~1s and retried while the target was still sleeping.
    assert second.started - first.started < 2.0
    assert second.headers["x-cloudtasks-taskretrycount"] == "1"
    assert second.headers["x-cloudtasks-taskexecutioncount"] == "0"
    assert second.headers["x-cloudtasks-taskpreviousresponse"] == "0"
    assert second.headers["x-cloudtasks-taskretryreason"] == "DEADLINE_EXCEEDED"
    wait_until(task_gone(client, task.name))


def _max_overlap(requests_: list[Received]) -> int:
    events = sorted([(r.started, 1) for r in requests_] + [(r.finished or 0.0, -1) for r in requests_])
    current = peak = 0
    for _, delta in events:
        current += delta
        peak = max(peak, current)
    return peak


def test_max_concurrent_dispatches_one_means_no_overlap(
    client: tasks_v2.CloudTasksClient, target: Target
) -> None:
    queue_name = make_queue(client, "serial", rate_limits=tasks_v2.RateLimits(max_concurrent_dispatches=1))
    target.plan("/serial", *[(200, 0.15)] * 5)
    for _ in range(5):
        client.create_task(parent=queue_name, task=http_task(target.url("/serial")))
    got = sorted(target.wait_for("/serial", 5), key=lambda r: r.started)
    assert _max_overlap(got) == 1
    for a, b in zip(got, got[1:], strict=False):
        assert a.finished is not None and b.started >= a.finished


def test_update_queue_concurrency_takes_effect(client: tasks_v2.CloudTasksClient, target: Target) -> None:
    queue_name = make_queue(
        client, "widen", rate_limits=tasks_v2.RateLimits(max_concurrent_dispatches=1), paused=True
    )
    target.plan("/widen", *[(200, 0.5)] * 4)
    for _ in range(4):
        client.create_task(parent=queue_name, task=http_task(target.url("/widen")))
    client.update_queue(
        queue=tasks_v2.Queue(name=queue_name, rate_limits=tasks_v2.RateLimits(max_concurrent_dispatches=4)),
        update_mask=field_mask_pb2.FieldMask(paths=["rate_limits.max_concurrent_dispatches"]),
    )
    client.resume_queue(name=queue_name)
    got = target.wait_for("/widen", 4, timeout=5)
    assert _max_overlap(got) > 1


def test_max_dispatches_per_second_spreads_dispatches(
    client: tasks_v2.CloudTasksClient, target: Target
) -> None:
    queue_name = make_queue(
        client, "rate", rate_limits=tasks_v2.RateLimits(max_dispatches_per_second=5), paused=True
    )
    assert client.get_queue(name=queue_name).rate_limits.max_burst_size == 1
    for _ in range(10):
        client.create_task(parent=queue_name, task=http_task(target.url("/rate")))
    client.resume_queue(name=queue_name)
    got = sorted(r.started for r in target.wait_for("/rate", 10, timeout=10))
    assert got[-1] - got[0] >= 1.5
    # Never more than burst + rate * window dispatches in any window.
    for i, start in enumerate(got):
        in_window = [t for t in got[i:] if t - start < 1.0]
        assert len(in_window) <= 1 + 5 + 1


def test_oidc_token_verifies_with_google_auth(
    client: tasks_v2.CloudTasksClient, target: Target, emulator: Emulator
) -> None:
    queue_name = make_queue(client, "oidc")
    email = "invoker@test-project.iam.gserviceaccount.com"
    client.create_task(
        parent=queue_name,
        task=tasks_v2.Task(
            http_request=tasks_v2.HttpRequest(
                url=target.url("/oidc?tenant=7"),
                oidc_token=tasks_v2.OidcToken(service_account_email=email),
            )
        ),
    )
    client.create_task(
        parent=queue_name,
        task=tasks_v2.Task(
            http_request=tasks_v2.HttpRequest(
                url=target.url("/oidc"),
                oidc_token=tasks_v2.OidcToken(service_account_email=email, audience="https://my-service"),
            )
        ),
    )
    reqs = target.wait_for("/oidc", 2)
    certs_url = f"{emulator.http_base}/oauth2/v1/certs"
    by_query = {r.path: r for r in reqs}
    default_aud = by_query["/oidc?tenant=7"].headers["authorization"]
    assert default_aud.startswith("Bearer ")
    claims = id_token.verify_token(
        default_aud.removeprefix("Bearer "),
        google.auth.transport.requests.Request(),
        audience=target.url("/oidc"),
        certs_url=certs_url,
    )
    assert claims["email"] == email
    assert claims["email_verified"] is True
    assert claims["iss"] == "https://accounts.google.com"
    assert claims["sub"].isdigit() and claims["azp"] == claims["sub"]
    assert claims["exp"] - claims["iat"] == 3600

    jwks = requests.get(f"{emulator.http_base}/oauth2/v3/certs", timeout=5).json()
    (jwk,) = jwks["keys"]
    assert jwk["kty"] == "RSA" and jwk["alg"] == "RS256"
    assert jwk["kid"] in requests.get(certs_url, timeout=5).json()

    explicit = by_query["/oidc"].headers["authorization"].removeprefix("Bearer ")
    claims2 = id_token.verify_token(
        explicit, google.auth.transport.requests.Request(), audience="https://my-service", certs_url=certs_url
    )
    assert claims2["sub"] == claims["sub"]
    with pytest.raises(ValueError):
        id_token.verify_token(
            explicit, google.auth.transport.requests.Request(), audience="https://other", certs_url=certs_url
        )


def test_queue_http_target_overrides(
    client: tasks_v2.CloudTasksClient, target: Target, emulator: Emulator
) -> None:
    name = f"{PARENT}/queues/{unique('override')}"
    email = "queue-sa@test-project.iam.gserviceaccount.com"
    client.create_queue(
        parent=PARENT,
        queue=tasks_v2.Queue(
            name=name,
            http_target=tasks_v2.HttpTarget(
                uri_override=tasks_v2.UriOverride(
                    path_override=tasks_v2.PathOverride(path="/overridden"),
                    query_override=tasks_v2.QueryOverride(query_params="q=1"),
                ),
                http_method=tasks_v2.HttpMethod.PUT,
                header_overrides=[
                    tasks_v2.HttpTarget.HeaderOverride(
                        header=tasks_v2.HttpTarget.Header(key="X-Queue", value="yes")
                    )
                ],
                oidc_token=tasks_v2.OidcToken(service_account_email=email, audience="aud-x"),
            ),
        ),
    )
    client.create_task(parent=name, task=http_task(target.url("/original?drop=me"), body=b"b"))
    (req,) = target.wait_for("/overridden", 1)
    assert req.path == "/overridden?q=1"
    assert req.method == "PUT"
    assert req.body == b"b"
    assert req.headers["x-queue"] == "yes"
    claims = id_token.verify_token(
        req.headers["authorization"].removeprefix("Bearer "),
        google.auth.transport.requests.Request(),
        audience="aud-x",
        certs_url=f"{emulator.http_base}/oauth2/v1/certs",
    )
    assert claims["email"] == email


def test_sigterm_exits_cleanly_with_dispatch_in_flight(target: Target) -> None:
    emu = start_emulator()
    try:
        channel = grpc.insecure_channel(emu.grpc_addr)
        local = tasks_v2.CloudTasksClient(transport=CloudTasksGrpcTransport(channel=channel))
        queue_name = make_queue(local, "shutdown")
        target.plan("/hang", (200, 20))
        local.create_task(
            parent=queue_name,
            task=http_task(target.url("/hang"), dispatch_deadline=duration_pb2.Duration(seconds=600)),
        )
        wait_until(
            lambda: (
                requests.get(f"{emu.http_base}/v1/stats", timeout=5).json()["queues"][queue_name]["in_flight"]
                == 1
            )
        )
        channel.close()
        started = time.monotonic()
        assert emu.stop(timeout=10) == 0
        assert time.monotonic() - started < 8
    finally:
        if emu.proc.poll() is None:
            emu.proc.kill()


def test_a_task_over_one_mebibyte_is_refused_and_one_under_is_taken(client: tasks_v2.CloudTasksClient,
                                                                      target: Target) -> None:
    queue = make_queue(client, "big", paused=True)
    with pytest.raises(api_exceptions.InvalidArgument, match="Task size too large"):
        client.create_task(parent=queue, task=http_task(target.url("/big"), body=b"x" * (1024 * 1024)))
    created = client.create_task(parent=queue, task=http_task(target.url("/big"), body=b"x" * (512 * 1024)))
    assert created.name.startswith(queue)
