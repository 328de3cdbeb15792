"""An in-process runtime on the in-memory ports: the whole step protocol, no emulators.

For unit tests of agents and of the engine (like Temporal's test environments): start a run, then
``drive()`` delivers due tasks (and published approval decisions) until nothing is due. The clock is
manual, so leases, limits, timers and expiry can be tested without waiting: advance it and drive again.
"""

from __future__ import annotations

from collections.abc import Callable

from agex.agent import Agent, AgentRegistry
from agex.approval import DECISIONS_TOPIC, DecisionMessage
from agex.approval_service import ApprovalService
from agex.auth import Caller
from agex.clock import ManualClock, SequentialIds
from agex.decision_signing import DecisionSigner, DecisionVerifier, new_key_pair
from agex.engine.approvals import ApprovalApplier, Outcome
from agex.engine.decisions import Delivery
from agex.engine.stepper import StepResult, StepRunner, StepSettings
from agex.errors import LeaseHeld, NotDue, TransientError
from agex.memory.checkpoint_store import InMemoryCheckpointStore
from agex.memory.event_bus import InMemoryEventBus
from agex.memory.limiter import InMemoryLimiter
from agex.memory.secret_store import InMemorySecretStore
from agex.memory.task_queue import InMemoryTaskQueue
from agex.ports.model import Model
from agex.ports.task_queue import ApprovalExpiryTask, Task
from agex.pricing import Pricing
from agex.run import RunHead
from agex.service import CreateRunRequest, RunService

DEFAULT_CALLER = Caller("dev", "dev@example.com")


class InMemoryRuntime:
    def __init__(self, agents: list[Agent], model: Model | Callable[[Agent], Model], *,
                 lease_seconds: float = 60.0) -> None:
        self.clock = ManualClock()
        self.store = InMemoryCheckpointStore()
        self.queue = InMemoryTaskQueue()
        self.bus = InMemoryEventBus()
        self.agents = AgentRegistry([a if a.identity else a.model_copy(update={"identity": f"agent-{a.name}@test"})
                                     for a in agents])
        models = model if callable(model) and not isinstance(model, Model) else (lambda agent: model)
        self.secrets = InMemorySecretStore()
        """Grant agents their secrets here: ``rt.secrets.add_version(name, value); rt.secrets.grant(name,
        agent.identity)``."""
        self.limiter = InMemoryLimiter()
        self.runner = StepRunner(store=self.store, queue=self.queue, bus=self.bus, agents=self.agents,
                                 models=models, pricing=Pricing(), clock=self.clock,
                                 settings=StepSettings(lease_seconds=lease_seconds), secrets=self.secrets,
                                 limiter=self.limiter)
        self.service = RunService(store=self.store, queue=self.queue, agents=self.agents, clock=self.clock,
                                  ids=SequentialIds())
        # decisions are signed and verified as in a deployment, with a key pair of this runtime's own
        private, public = new_key_pair()
        self.signer = DecisionSigner.from_pem("api", private)
        self.approvals = ApprovalService(store=self.store, bus=self.bus, agents=self.agents, clock=self.clock,
                                         ids=SequentialIds(), signer=lambda: self.signer)
        self.applier = ApprovalApplier(store=self.store, queue=self.queue, bus=self.bus, clock=self.clock,
                                       agents=self.agents, verifier=DecisionVerifier.from_config({"api": [public]}))
        self._decisions_seen = 0
        self.results: list[StepResult] = []

    def start(self, agent: str, input: str, caller: Caller = DEFAULT_CALLER, **kwargs: object) -> RunHead:
        return self.service.start(caller, agent, CreateRunRequest(input=input), **kwargs).run  # type: ignore[arg-type]

    def deliver(self, task: Task, attempt: int = 0, instance: str = "test") -> StepResult | Outcome:
        """One delivery of ``task``, as Cloud Tasks would make it."""
        if isinstance(task, ApprovalExpiryTask):
            return self.applier.expire(task.tenant, task.run_id, task.approval_id)
        result = self.runner.run(Delivery(tenant=task.tenant, run_id=task.run_id, step=task.step,
                                          task_name=task.name, attempt=attempt, instance=instance))
        self.results.append(result)
        return result

    def deliver_decisions(self) -> list[Outcome]:
        """Apply the decisions published since the last call, as the ``approvals`` function would."""
        published = self.bus.on(DECISIONS_TOPIC)
        fresh, self._decisions_seen = published[self._decisions_seen:], len(published)
        return [self.applier.apply(DecisionMessage.model_validate(m.message)) for m in fresh]

    def drive(self, max_deliveries: int = 10_000) -> int:
        """Deliver due tasks until none is left; a delivery that asks for a retry is retried."""
        delivered = 0

        def handle(task: Task, attempt: int) -> bool:
            try:
                self.deliver(task, attempt)
                return True
            except (LeaseHeld, NotDue, TransientError):
                return False

        while delivered < max_deliveries:
            self.deliver_decisions()
            due = self.queue.deliver_due(self.clock.now(), handle)
            if not due:
                break
            delivered += due
        return delivered

    def run(self, agent: str, input: str) -> RunHead:
        head = self.start(agent, input)
        self.drive()
        final = self.store.get_run(head.tenant, head.run_id)
        assert final is not None
        return final
