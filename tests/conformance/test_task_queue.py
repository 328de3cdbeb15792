"""The task queue port: the in-memory queue and the Cloud Tasks adapter on our Cloud Tasks emulator."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from google.cloud import tasks_v2

from agex.adapters.gcp.cloud_tasks import CloudTasksQueue, make_client
from agex.adapters.inmemory.task_queue import InMemoryTaskQueue
from agex.core.errors import ConfigurationError
from agex.dev.emulators.gcloud import free_port
from agex.ports.task_queue import ApprovalExpiryTask, StepTask, TaskQueue
from tests.emulator_process import python_emulator

PROJECT, LOCATION = "agex-test", "us-central1"


@pytest.fixture(scope="module")
def tasks_emulator() -> Iterator[str]:
    port, http_port = free_port(), free_port()
    with python_emulator("agex.dev.emulators.cloudtasks", "--host", "127.0.0.1", "--port", str(port),
                         "--http-port", str(http_port)):
        yield f"127.0.0.1:{port}"


class Queues:
    """A queue under test, plus how to make one of its pending tasks disappear (run or deleted)."""

    def __init__(self, queue: TaskQueue, forget: Any) -> None:
        self.queue, self.forget = queue, forget


@pytest.fixture(params=["memory", "cloudtasks"])
def queues(request: pytest.FixtureRequest) -> Queues:
    if request.param == "memory":
        mem = InMemoryTaskQueue()
        return Queues(mem, mem.drop)
    host = request.getfixturevalue("tasks_emulator")
    client = make_client(host)
    name = f"q-{uuid.uuid4().hex[:10]}"
    path = client.queue_path(PROJECT, LOCATION, name)
    client.create_queue(parent=f"projects/{PROJECT}/locations/{LOCATION}", queue=tasks_v2.Queue(name=path))
    client.pause_queue(name=path)  # tasks stay pending: nothing is dispatched during the test
    queue = CloudTasksQueue(project=PROJECT, location=LOCATION, queue=name, url="http://127.0.0.1:9/",
                            service_account="step@agex-test.iam.gserviceaccount.com", audience="http://127.0.0.1:9/",
                            client=client)
    return Queues(queue, lambda task: client.delete_task(name=queue.task_path(task)))


def task(step: int = 1, **kw: Any) -> StepTask:
    return StepTask(tenant="dev", run_id=f"run_{uuid.uuid4().hex[:8]}", step=step, **kw)


def test_a_task_is_created_once_per_name(queues: Queues) -> None:
    t = task()
    assert queues.queue.enqueue(t) is True
    assert queues.queue.enqueue(t) is False
    assert queues.queue.exists(t)


def test_unknown_tasks_do_not_exist(queues: Queues) -> None:
    assert not queues.queue.exists(task())


def test_a_name_stays_taken_after_its_task_is_gone(queues: Queues) -> None:
    t = task()
    queues.queue.enqueue(t)
    queues.forget(t)
    assert not queues.queue.exists(t)
    assert queues.queue.enqueue(t) is False, "a retry must not run a step that already ran"


def test_generations_and_steps_get_distinct_names(queues: Queues) -> None:
    t = task()
    assert queues.queue.enqueue(t)
    assert queues.queue.enqueue(t.model_copy(update={"generation": 1}))
    assert queues.queue.enqueue(t.model_copy(update={"step": 2}))


def test_a_scheduled_task_is_pending_until_due(queues: Queues) -> None:
    t = task(schedule_at=datetime.now(UTC) + timedelta(hours=1), traceparent="00-" + "a" * 32 + "-" + "b" * 16 + "-01")
    assert queues.queue.enqueue(t)
    assert queues.queue.exists(t)


def test_an_approval_expiry_task_is_named_by_its_approval_and_dedupes(queues: Queues) -> None:
    step = task()
    expiry = ApprovalExpiryTask(tenant="dev", run_id=step.run_id, approval_id="apr_abc",
                                schedule_at=datetime.now(UTC) + timedelta(hours=24))
    assert queues.queue.enqueue(step) and queues.queue.enqueue(expiry)
    assert queues.queue.enqueue(expiry) is False
    assert queues.queue.exists(expiry)
    queues.forget(expiry)
    assert not queues.queue.exists(expiry) and queues.queue.exists(step)


def test_cloud_tasks_delivers_each_kind_of_task_to_its_path(tasks_emulator: str) -> None:
    client = make_client(tasks_emulator)
    name = f"q-{uuid.uuid4().hex[:10]}"
    path = client.queue_path(PROJECT, LOCATION, name)
    client.create_queue(parent=f"projects/{PROJECT}/locations/{LOCATION}", queue=tasks_v2.Queue(name=path))
    client.pause_queue(name=path)
    queue = CloudTasksQueue(project=PROJECT, location=LOCATION, queue=name, url="http://127.0.0.1:9/",
                            service_account="step@agex-test.iam.gserviceaccount.com", audience="http://127.0.0.1:9/",
                            client=client)
    step = task()
    expiry = ApprovalExpiryTask(tenant="dev", run_id=step.run_id, approval_id="apr_abc")
    queue.enqueue(step)
    queue.enqueue(expiry)
    urls = {t.name.rsplit("/", 1)[1]: t.http_request.url
            for t in client.list_tasks(request={"parent": path, "response_view": tasks_v2.Task.View.FULL})}
    assert urls == {step.name: "http://127.0.0.1:9/", expiry.name: "http://127.0.0.1:9/approval-expiry"}


def test_cloud_tasks_routes_each_agents_tasks_to_its_own_queue(tasks_emulator: str) -> None:
    client = make_client(tasks_emulator)
    base = f"q-{uuid.uuid4().hex[:8]}"
    for name in (base, f"{base}-support"):
        path = client.queue_path(PROJECT, LOCATION, name)
        client.create_queue(parent=f"projects/{PROJECT}/locations/{LOCATION}", queue=tasks_v2.Queue(name=path))
        client.pause_queue(name=path)
    queue = CloudTasksQueue(project=PROJECT, location=LOCATION, queue=base, url="http://127.0.0.1:9/",
                            service_account="step@agex-test.iam.gserviceaccount.com", audience="http://127.0.0.1:9/",
                            client=client, per_agent=True)
    step = task(agent="support")
    assert queue.enqueue(step) and queue.exists(step)
    expiry = ApprovalExpiryTask(tenant="dev", run_id=step.run_id, approval_id="apr_x", agent="support")
    assert queue.enqueue(expiry)
    support = [t.name.rsplit("/", 1)[1]
               for t in client.list_tasks(parent=client.queue_path(PROJECT, LOCATION, f"{base}-support"))]
    assert sorted(support) == sorted([step.name, expiry.name])
    assert list(client.list_tasks(parent=client.queue_path(PROJECT, LOCATION, base))) == []
    with pytest.raises(ConfigurationError, match=f"{base}-ticker does not exist"):
        queue.enqueue(task(agent="ticker"))
