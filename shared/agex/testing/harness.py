"""An in-process runtime on the in-memory ports: the whole step protocol, no emulators.

For unit tests of agents and of the engine (like Temporal's test environments): start a run, then
``drive()`` delivers due tasks (and published approval decisions) until nothing is due. The clock is
manual, so leases, limits, timers and expiry can be tested without waiting: advance it and drive again.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import cast

from agex.adapters.inmemory.event_bus import InMemoryEventBus
from agex.adapters.inmemory.secret_store import InMemorySecretStore
from agex.adapters.inmemory.task_queue import InMemoryTaskQueue
from agex.app.backends import Backends
from agex.app.runtime import Runtime
from agex.app.settings import Settings
from agex.core.agent import Agent, AgentRegistry
from agex.core.approval import DECISIONS_TOPIC, DecisionMessage
from agex.core.clock import ManualClock, SequentialIds
from agex.core.errors import LeaseHeld, NotDue, TransientError
from agex.core.run import RunHead
from agex.core.schedule import Schedule
from agex.core.spend import Budget
from agex.core.webhook import Webhook
from agex.engine.approvals import Outcome
from agex.engine.decisions import Delivery
from agex.engine.runs import CreateRunRequest
from agex.engine.stepper import StepResult
from agex.engine.webhooks import Delivered
from agex.ports.auth import Caller
from agex.ports.model import Model
from agex.ports.task_queue import ApprovalExpiryTask, MemoryTask, Task, ThreadTask, WebhookTask

DEFAULT_CALLER = Caller("dev", "dev@example.com")


class InMemoryRuntime:
    """The composition root (``Runtime``) on ``Backends.in_memory``, with a manual clock and predictable ids,
    and the deliveries Cloud Tasks and Pub/Sub would make done by hand."""

    def __init__(self, agents: list[Agent], model: Model | Callable[[Agent], Model], *,
                 lease_seconds: float = 60.0, budgets: Sequence[Budget] = (),
                 schedules: Sequence[Schedule] = (), webhooks: Sequence[Webhook] = ()) -> None:
        self.clock = ManualClock()
        models = model if callable(model) and not isinstance(model, Model) else (lambda agent: model)
        self.secrets = InMemorySecretStore()
        """Grant agents their secrets here: ``rt.secrets.add_version(name, value); rt.secrets.grant(name,
        agent.identity)``."""
        # defaults, not this process's AGEX_* environment: a test's runtime is the test's alone
        self._settings = Settings.model_construct(step_lease_seconds=lease_seconds, budgets=list(budgets))
        self._backends = Backends.in_memory(models, clock=self.clock, ids=SequentialIds(), secrets=self.secrets)
        self._decisions_seen = 0
        self.results: list[StepResult] = []
        self._schedules, self._webhooks = tuple(schedules), tuple(webhooks)
        self._wire(agents)

    def _wire(self, agents: list[Agent], previous: Sequence[Agent] = (),
              migrations: Mapping[str, Mapping[str, str]] | None = None) -> None:
        def named(a: Agent) -> Agent:
            return a if a.identity else a.model_copy(update={"identity": f"agent-{a.name}@test"})

        self.runtime = rt = Runtime(self._settings, self._backends, agents=AgentRegistry(
            [named(a) for a in agents], previous=[named(a) for a in previous], migrations=migrations),
            schedules=self._schedules, webhooks=self._webhooks)
        self.agents, self.store, self.limiter, self.metrics = rt.agents, rt.store, rt.limiter, rt.metrics
        self.queue, self.bus = cast(InMemoryTaskQueue, rt.queue), cast(InMemoryEventBus, rt.bus)
        self.runner, self.service, self.approvals, self.applier = rt.runner, rt.service, rt.approval_service, rt.applier
        self.signer = rt.decision_signer
        """Decisions are signed and verified as in a deployment, with the in-memory backend's own key pair."""

    def redeploy(self, agents: list[Agent], model: Model | Callable[[Agent], Model] | None = None, *,
                 previous: Sequence[Agent] = (), migrations: Mapping[str, Mapping[str, str]] | None = None) -> None:
        """A new deployment of other agent code (a new version) on the same stores, queue and bus, as a new
        revision of the functions would be: runs under way go on with the version they started on when it is
        still served (``previous``), or where ``migrations`` move them (docs/versions.md)."""
        if model is not None:
            models = model if callable(model) and not isinstance(model, Model) else (lambda agent: model)
            self._backends = dataclasses.replace(self._backends, models=lambda: models)
        self._wire(agents, previous, migrations)

    def start(self, agent: str, input: str, caller: Caller = DEFAULT_CALLER, **kwargs: object) -> RunHead:
        return self.service.start(caller, agent, CreateRunRequest(input=input), **kwargs).run  # type: ignore[arg-type]

    def deliver(self, task: Task, attempt: int = 0, instance: str = "test") -> StepResult | Outcome | Delivered | str:
        """One delivery of ``task``, as Cloud Tasks would make it."""
        if isinstance(task, ApprovalExpiryTask):
            return self.applier.expire(task.tenant, task.run_id, task.approval_id)
        if isinstance(task, WebhookTask):
            return self.runtime.webhooks.deliver(task.tenant, task.run_id, task.webhook)
        if isinstance(task, ThreadTask):
            return self.runtime.threads.advance(task.tenant, task.thread_id, task.run_id)
        if isinstance(task, MemoryTask):
            memory = self.runtime.memory
            return memory.learn(task.tenant, task.run_id) if memory is not None else "off"
        result = self.runner.run(Delivery.of(task, attempt, instance))
        self.results.append(result)
        return result

    def deliver_decisions(self) -> list[Outcome]:
        """Apply the decisions published since the last call, as the ``approvals`` function would."""
        published = self.bus.on(DECISIONS_TOPIC)
        fresh, self._decisions_seen = published[self._decisions_seen:], len(published)
        return [self.applier.apply(DecisionMessage.model_validate(m.message)) for m in fresh]

    def drive(self, max_deliveries: int = 10_000) -> int:
        """Deliver due tasks until none is left; a delivery that asks for a retry is retried, until a pass
        completes none: then only the clock can change the answer (a live lease elsewhere, a task not due)."""
        delivered = 0
        completed = 0

        def handle(task: Task, attempt: int) -> bool:
            nonlocal completed
            try:
                self.deliver(task, attempt)
            except (LeaseHeld, NotDue, TransientError):
                return False
            completed += 1
            return True

        while delivered < max_deliveries:
            decided = len(self.deliver_decisions())
            completed = 0
            due = self.queue.deliver_due(self.clock.now(), handle)
            if not due or (not completed and not decided):
                break
            delivered += due
        return delivered

    def run(self, agent: str, input: str) -> RunHead:
        return self.run_as(DEFAULT_CALLER, agent, input)

    def run_as(self, caller: Caller, agent: str, input: str) -> RunHead:
        """Start a run as ``caller`` and drive it (and anything else due) until nothing is due."""
        head = self.start(agent, input, caller)
        self.drive()
        final = self.store.get_run(head.tenant, head.run_id)
        assert final is not None
        return final
