"""The composition root: the one place that builds the services and handlers, from ``Settings`` and the
``Backends`` that serve the ports (Google Cloud in a deployment, memory in tests and the embedded mode).

Everything is built on first use, so each function pays at start only for what it serves: the API never
imports ``google.genai``, and the step function imports it on its first model call; the Pub/Sub and Secret
Manager clients load on the first publish and the first secret read; the libraries of MCP and HTTP tools
on their first call (``tests/unit/test_cold_start_imports.py`` holds the functions to this).
"""

from __future__ import annotations

import functools
import os
import socket
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from agex.adapters.inmemory.authenticator import StaticTokenAuthenticator
from agex.app.backends import Backends, Models
from agex.app.http.step_endpoint import StepEndpoint
from agex.app.settings import Settings
from agex.core.agent import Agent, AgentRegistry
from agex.core.decision_signing import DecisionSigner, DecisionVerifier
from agex.core.errors import ConfigurationError
from agex.core.guard import Chain
from agex.core.pricing import DEFAULT_PRICES, Pricing
from agex.core.schedule import Schedule
from agex.core.spend import Budget
from agex.core.webhook import Webhook
from agex.engine.approvals import ApprovalApplier, ApprovalService
from agex.engine.budgets import Budgets
from agex.engine.memory import MemoryService
from agex.engine.metrics import Recorder, Versions
from agex.engine.runs import RunService
from agex.engine.stepper import StepRunner, StepSettings
from agex.engine.threads import ThreadService
from agex.engine.webhooks import WebhookSender
from agex.obs import logging as log
from agex.obs import metrics, tracing
from agex.ports.auth import Authenticator
from agex.ports.breakers import BreakerPolicy
from agex.ports.checkpoint_store import CheckpointStore
from agex.ports.degradations import DegradationStore
from agex.ports.event_bus import EventBus
from agex.ports.failpoints import NO_FAILPOINTS, Failpoints
from agex.ports.limiter import Limiter
from agex.ports.metrics_store import MetricsStore
from agex.ports.model import Model
from agex.ports.secret_store import SecretStore
from agex.ports.task_queue import TaskQueue

if TYPE_CHECKING:
    # what only the API, the approvals function or an SLO loads: the step function's cold start skips them
    from agex.app.console.server import Console
    from agex.app.http.decision_push import DecisionPush
    from agex.app.http.drift_endpoint import DriftEndpoint
    from agex.app.http.public_api import PublicApi
    from agex.core.spend import Degrade
    from agex.engine.schedules import ScheduleService
    from agex.engine.slo import SloService
    from agex.engine.watching import DriftService


class Runtime:
    def __init__(self, settings: Settings | None = None, backends: Backends | None = None, *,
                 agents: AgentRegistry | None = None, schedules: Sequence[Schedule] = (),
                 webhooks: Sequence[Webhook] = ()) -> None:
        """``agents``, ``schedules`` and ``webhooks``: instead of the fleet file's (tests, and deployments from
        code)."""
        self.settings = settings or Settings()
        self.backends = backends or Backends.gcp(self.settings)
        self.clock, self.ids = self.backends.clock, self.backends.ids
        self.pricing = Pricing({**DEFAULT_PRICES, **self.settings.prices})
        self._drift_pins: dict[str, Any] = {}
        self._fleet_budgets: list[Budget] = []
        self._schedules: list[Schedule] = []
        self._webhooks: list[Webhook] = list(webhooks)
        if agents is not None:
            self.__dict__["agents"] = self._checked(agents)
            _check_schedules(list(schedules), self.__dict__["agents"])
            _check_webhooks(list(webhooks), self.__dict__["agents"])
            self._schedules = list(schedules)

    @functools.cached_property
    def agents(self) -> AgentRegistry:
        s = self.settings
        if s.fleet_file:
            from agex.app import fleet

            declared = fleet.load(s.fleet_file)
            self.pricing = Pricing({**DEFAULT_PRICES, **declared.prices, **s.prices})
            self._fleet_budgets = declared.budgets
            self._schedules = declared.schedules
            self._webhooks = declared.webhooks
            self._drift_pins = {name: a.drift for name, a in declared.agents.items() if a.drift is not None
                                and a.drift.baseline_version is not None}
            registry = self._checked(fleet.registry(declared, s.project))
            _check_schedules(declared.schedules, registry)
            _check_webhooks(declared.webhooks, registry)
            return registry
        if not s.agent_specs:
            raise ConfigurationError("this deployment has no agents: set AGEX_FLEET_FILE (a fleet file) or "
                                     "AGEX_AGENTS (module:attribute specs)")
        return self._checked(AgentRegistry([
            a.model_copy(update={"identity": a.identity or f"agent-{a.name}@{s.project}.iam.gserviceaccount.com"})
            for a in AgentRegistry.from_specs(s.agent_specs).all()]))

    def _checked(self, registry: AgentRegistry) -> AgentRegistry:
        from agex.guards import build_chain

        if self.settings.model:
            # one model for every agent (a local one in development): it is what the agents run on, so it is
            # what is priced, recorded and fingerprinted
            one = {"model": self.settings.model, "fallbacks": (), "model_rules": ()}
            registry = AgentRegistry([a.model_copy(update=one) for a in registry.all()], previous=[
                a.model_copy(update=one) for a in registry.every_version() if a is not registry.get(a.name)],
                migrations=registry.migrations())
        chains = {}
        for agent in registry.every_version():
            degraded = agent.slo.degrade.model if agent.slo else None
            for model in (agent.model, *agent.fallbacks, *(r.model for r in agent.model_rules),
                          *([degraded] if degraded else [])):
                self.pricing.check(model)
            try:
                chains[(agent.name, agent.version)] = build_chain(agent.guards) if agent.guards else None
            except ConfigurationError as e:
                raise ConfigurationError(f"agent {agent.name!r}: its guardrail chain is invalid: {e.message}") from e
        self._chains = chains
        return registry

    def _has_fallbacks(self) -> bool:
        """Whether any agent has a model to fall back to: only then are the models' circuits worth a read."""
        return any(a.fallbacks or a.model_rules for a in self.agents.all())

    def chain_for(self, agent: Agent) -> Chain | None:
        """The agent's guardrail chain, built (and checked) with the registry."""
        _ = self.agents
        return self._chains.get((agent.name, agent.version))

    # --- the ports, each built once on first use ---------------------------------------------------

    @functools.cached_property
    def store(self) -> CheckpointStore:
        return self.backends.store()

    @functools.cached_property
    def queue(self) -> TaskQueue:
        return self.backends.queue()

    @functools.cached_property
    def bus(self) -> EventBus:
        return self.backends.bus()

    @functools.cached_property
    def _models(self) -> Models:
        return self.backends.models()

    def model_for(self, agent: Agent) -> Model:
        return self._models(agent)

    @functools.cached_property
    def secret_store(self) -> SecretStore:
        return self.backends.secrets()

    @functools.cached_property
    def limiter(self) -> Limiter:
        return self.backends.limiter()

    @functools.cached_property
    def metrics(self) -> MetricsStore:
        return self.backends.metrics()

    @functools.cached_property
    def versions(self) -> Versions:
        return Versions(self.metrics, self.clock)

    @functools.cached_property
    def recorder(self) -> Recorder:
        return Recorder(store=self.store, metrics=self.metrics, agents=self.agents,
                        clock=self.clock, pricing=self.pricing)

    @functools.cached_property
    def degradations(self) -> DegradationStore:
        return self.backends.degradations()

    @functools.cached_property
    def slo(self) -> SloService:
        from agex.engine.slo import SloService

        return SloService(self.degradations, self.metrics, self.agents, self.clock, self.bus)

    @functools.cached_property
    def drift(self) -> DriftService:
        from agex.engine.watching import Baseline, DriftService, DriftSettings

        s = self.settings
        _ = self.agents
        pins = {name: Baseline(p.baseline_version, p.baseline_from, p.baseline_to)
                for name, p in self._drift_pins.items()}
        settings = DriftSettings(window_s=s.drift_window_seconds, interval_s=s.drift_interval_seconds,
                                 alpha=s.drift_alpha, min_runs=s.drift_min_runs, baseline_s=s.drift_baseline_seconds,
                                 settle_s=s.drift_settle_seconds, pins=pins)
        return DriftService(store=self.store, metrics=self.metrics, bus=self.bus, agents=self.agents,
                            clock=self.clock, recorder=self.recorder, versions=self.versions, settings=settings,
                            instance=f"{socket.gethostname()}-{os.getpid()}")

    @functools.cached_property
    def failpoints(self) -> Failpoints:
        from agex.adapters.failpoints import FileFailpoints

        return FileFailpoints(self.settings.failpoints_file) if self.settings.failpoints_file else NO_FAILPOINTS

    @functools.cached_property
    def schedules(self) -> ScheduleService:
        """The fleet file's schedules (checked with the agents)."""
        from agex.engine.schedules import ScheduleService

        _ = self.agents
        return ScheduleService(self._schedules, self.backends.schedules(), self.service, self.clock)

    def _declared_webhooks(self) -> list[Webhook]:
        _ = self.agents
        return self._webhooks

    @functools.cached_property
    def webhooks(self) -> WebhookSender:
        """Delivers the webhooks of ended runs (the step function's ``/webhook`` tasks)."""
        _ = self.agents
        return WebhookSender(self._webhooks, self.store, self.backends.own_secret, _post, self.clock)

    @functools.cached_property
    def budgets(self) -> Budgets | None:
        """The budgets across runs, from the fleet file and ``AGEX_BUDGETS``; None when there are none (then
        nothing reads the ledger)."""
        _ = self.agents  # the fleet file's are read with the agents
        declared = [*self._fleet_budgets, *self.settings.budgets]
        if not declared:
            return None
        for b in declared:
            if b.degrade.model:
                self.pricing.check(b.degrade.model)
        return Budgets(declared, self.backends.spend(), _LazyBus(lambda: self.bus),
                       cache_s=self.settings.budget_cache_seconds)

    # --- services and handlers -----------------------------------------------------------------------

    @functools.cached_property
    def service(self) -> RunService:
        return RunService(store=self.store, queue=self.queue, agents=self.agents, clock=self.clock, ids=self.ids,
                          max_input_bytes=self.settings.max_input_bytes,
                          sweep_after=timedelta(seconds=self.settings.sweep_after_seconds), failpoints=self.failpoints,
                          chains=self.chain_for, fingerprint=self.versions.fingerprint, budgets=self.budgets,
                          webhooks=self._declared_webhooks())

    @functools.cached_property
    def threads(self) -> ThreadService:
        """Conversations (the API's threads endpoints, the step function's thread tasks and sweep)."""
        return ThreadService(threads=self.backends.threads(), runs=self.service, store=self.store, queue=self.queue,
                             agents=self.agents, clock=self.clock, ids=self.ids, models=self.model_for,
                             pricing=self.pricing, ledger=self.backends.spend())

    @functools.cached_property
    def memory(self) -> MemoryService | None:
        """Long-term memory (docs/memory.md), when an agent of the deployment declares it; its embedder, stores and
        the injection detector that screens what enters it load on first use."""
        if not any(a.memory is not None for a in self.agents.every_version()):
            return None
        from agex.engine import notify
        from agex.guards.injection import detector

        b = self.backends
        return MemoryService(vectors=b.vectors, embedder=b.embedder, store=self.store, agents=self.agents,
                             models=self.model_for, pricing=self.pricing, clock=self.clock,
                             screen=lambda text: detector().score(text),
                             graph=b.graph,
                             notify_approval=lambda approval: notify.approval_waiting(
                                 self.queue, _LazyBus(lambda: self.bus), approval, self.settings.public_url))

    def _memory(self) -> Callable[[], MemoryService] | None:
        memory = self.memory
        return (lambda: memory) if memory is not None else None

    @functools.cached_property
    def approval_service(self) -> ApprovalService:
        # the API publishes only when a decision is made: the Pub/Sub client and the signing key load then,
        # not at cold start
        return ApprovalService(store=self.store, bus=_LazyBus(lambda: self.bus), agents=self.agents,
                               clock=self.clock, ids=self.ids, signer=lambda: self.decision_signer)

    @functools.cached_property
    def decision_signer(self) -> DecisionSigner:
        """The API's signing key (Secret Manager, read as the API's own identity, in a deployment)."""
        return DecisionSigner.from_pem("api", self.backends.signing_key())

    @functools.cached_property
    def decision_verifier(self) -> DecisionVerifier:
        sources = {name: list(keys) for name, keys in self.settings.decision_sources.items()}
        for name, keys in self.backends.decision_sources.items():
            sources.setdefault(name, []).extend(keys)
        return DecisionVerifier.from_config(sources)

    @functools.cached_property
    def public_api(self) -> PublicApi:
        from agex.app.http import limits
        from agex.app.http.public_api import PublicApi
        from agex.engine.reports import Reports

        return PublicApi(service=self.service, approvals=self.approval_service, agents=self.agents,
                         max_wait_s=self.settings.max_wait_seconds, stream_max_s=self.settings.stream_max_seconds,
                         schedules=lambda: self.schedules, threads=lambda: self.threads,
                         live_texts=(self.backends.live if any(a.stream_text for a in self.agents.every_version())
                                     else None),
                         console=self.console, memory=self._memory(),
                         authenticator=self.authenticator,
                         max_body_bytes=limits.body_limit(self.settings.max_input_bytes),
                         base_url=self.settings.public_url,
                         reports=Reports(metrics=lambda: self.metrics, agents=self.agents, clock=self.clock,
                                         ids=self.ids))

    @functools.cached_property
    def console(self) -> Console | None:
        """The browser console under ``/console`` (docs/console.md); its sessions are signed with a key derived
        from the API's decision signing key, read on the first console request."""
        if not self.settings.console:
            return None
        from agex.app.console.server import Console
        from agex.app.console.session import Sessions

        s = self.settings
        sessions = functools.cache(lambda: Sessions.derived(self.backends.signing_key().encode()))
        iap = None
        if s.console_iap_audience:
            from agex.adapters.gcp.oidc import IapAssertions, parse_tenants

            iap = IapAssertions(audience=s.console_iap_audience, tenants=parse_tenants(s.tenants),
                                certs_url=s.console_iap_certs_url)
        return Console(sessions=sessions, authenticator=self.authenticator, service=self.service,
                       project=s.project if s.authenticator == "google" else "", log_dir=s.console_log_dir, iap=iap)

    @functools.cached_property
    def authenticator(self) -> Authenticator:
        s = self.settings
        if s.authenticator == "dev":
            return StaticTokenAuthenticator.parse(s.dev_tokens)
        from agex.adapters.gcp.oidc import GoogleIdTokenAuthenticator, GoogleIdTokens

        if not s.api_audience or not s.tenants:
            raise ConfigurationError("AGEX_AUTHENTICATOR=google needs AGEX_API_AUDIENCE (the API's URL) and "
                                     "AGEX_TENANTS (email-pattern=tenant pairs)")
        return GoogleIdTokenAuthenticator.parse(
            GoogleIdTokens(audience=s.api_audience, certs_url=s.oidc_certs_url), s.tenants)

    def _degradation_reader(self) -> Callable[[str, datetime], Degrade | None] | None:
        """What the step asks of an agent's SLO degradation, when some agent declares an SLO."""
        if not any(a.slo for a in self.agents.all()):
            return None
        from agex.engine.slo import reader

        return reader(self.degradations)

    @functools.cached_property
    def runner(self) -> StepRunner:
        s = self.settings
        # secrets are read on the first tool that needs one, and notifications published when a run finishes
        # or waits: their clients load then, not at cold start
        return StepRunner(store=self.store, queue=self.queue, bus=_LazyBus(lambda: self.bus), agents=self.agents,
                          models=self.model_for, pricing=self.pricing, clock=self.clock,
                          settings=StepSettings(lease_seconds=s.step_lease_seconds, public_url=s.public_url,
                                                issue_lease=s.step_issue_lease,
                                                breaker=BreakerPolicy(failures=s.breaker_failures,
                                                                      window_s=s.breaker_window_seconds,
                                                                      cooldown_s=s.breaker_cooldown_seconds)),
                          secrets=_LazySecrets(lambda: self.secret_store), limiter=self.limiter,
                          failpoints=self.failpoints, chains=self.chain_for, record=self.recorder.record,
                          breakers=self.backends.breakers() if self._has_fallbacks() else None,
                          budgets=self.budgets, webhooks=self._declared_webhooks(),
                          live=self.backends.live() if any(a.stream_text for a in self.agents.every_version()) else None,
                          degradation=self._degradation_reader(),
                          memory=self._memory())

    @functools.cached_property
    def step_endpoint(self) -> StepEndpoint:
        from agex.adapters.gcp.oidc import GoogleIdTokens, OidcVerifier

        s = self.settings
        verify = OidcVerifier(GoogleIdTokens(audience=s.audience, certs_url=s.oidc_certs_url), s.step_service_account)
        return StepEndpoint(runner=self.runner, service=self.service, approvals=self.applier, verify=verify,
                            instance=f"{socket.gethostname()}-{os.getpid()}", schedules=lambda: self.schedules,
                            webhooks=lambda: self.webhooks, threads=lambda: self.threads, memory=self._memory())

    @functools.cached_property
    def drift_endpoint(self) -> DriftEndpoint:
        from agex.adapters.gcp.oidc import GoogleIdTokens, OidcVerifier
        from agex.app.http.drift_endpoint import DriftEndpoint

        s = self.settings
        audience = s.drift_audience or s.drift_url
        if not audience:
            raise ConfigurationError("the drift function needs AGEX_DRIFT_URL (its own URL, the audience of the "
                                     "scheduler's OIDC tokens)")
        verify = OidcVerifier(GoogleIdTokens(audience=audience, certs_url=s.oidc_certs_url), s.drift_invoker)
        return DriftEndpoint(service=lambda: self.drift, slo=lambda: self.slo, verify=verify)

    @functools.cached_property
    def applier(self) -> ApprovalApplier:
        return ApprovalApplier(store=self.store, queue=self.queue, bus=_LazyBus(lambda: self.bus), clock=self.clock,
                               agents=self.agents, verifier=self.decision_verifier, webhooks=self._declared_webhooks(),
                               memory=self._memory())

    @functools.cached_property
    def decision_push(self) -> DecisionPush:
        """The ``approvals`` function's handler. Cloud Run IAM admits only the push identity, and the
        handler checks again itself: the push's OIDC token, then each decision's signature and the
        decider's authority (docs/security.md)."""
        from agex.adapters.gcp.oidc import GoogleIdTokens, OidcVerifier
        from agex.app.http.decision_push import DecisionPush

        s = self.settings
        if not s.decisions_push_audience:
            raise ConfigurationError("the approvals function needs AGEX_DECISIONS_PUSH_AUDIENCE, the audience of "
                                     "its push subscription's OIDC tokens (its own URL)")
        if not self.decision_verifier.sources:
            raise ConfigurationError("the approvals function needs AGEX_DECISION_SOURCES, the public keys of the "
                                     "decision sources (the API's); without it no decision can be applied")
        verify = OidcVerifier(GoogleIdTokens(audience=s.decisions_push_audience, certs_url=s.oidc_certs_url),
                              s.decisions_push_service_account)
        return DecisionPush(self.applier, verify)


class _LazyBus(EventBus):
    def __init__(self, build: Callable[[], EventBus]) -> None:
        self._build = build

    def publish(self, topic: str, message: dict[str, Any], attributes: dict[str, str] | None = None) -> str:
        return self._build().publish(topic, message, attributes)


class _LazySecrets(SecretStore):
    def __init__(self, build: Callable[[], SecretStore]) -> None:
        self._build = build

    def access(self, identity: str, secret: str) -> str:
        return self._build().access(identity, secret)


@functools.cache
def runtime() -> Runtime:
    """The process-wide runtime of a function, built from the environment on first use."""
    settings = Settings()
    log.setup(settings.project)
    tracing.setup(settings.project)
    metrics.setup(settings.project)
    return Runtime(settings)


def _check_schedules(schedules: list[Schedule], registry: AgentRegistry) -> None:
    """At start, like the agents: each schedule's agent deployed, its cron and time zone valid, names unique."""
    from agex.engine.schedules import check

    names = [s.name for s in schedules]
    if len(set(names)) != len(names):
        raise ConfigurationError("two schedules have the same name in the fleet file; names must be unique")
    deployed = {a.name for a in registry.all()}
    for schedule in schedules:
        check(schedule)
        if schedule.agent not in deployed:
            raise ConfigurationError(f"schedule {schedule.name!r} runs agent {schedule.agent!r}, which is not "
                                     f"deployed here (agents: {', '.join(sorted(deployed))})")


def _post(url: str, body: bytes, headers: dict[str, str]) -> int:
    """A webhook's POST: the status the endpoint answered, 0 when it did not (unreachable, timed out)."""
    import httpx

    try:
        return httpx.post(url, content=body, headers=headers, timeout=10.0, follow_redirects=False).status_code
    except httpx.HTTPError:
        return 0


def _check_webhooks(webhooks: list[Webhook], registry: AgentRegistry) -> None:
    names = [w.name for w in webhooks]
    if len(set(names)) != len(names):
        raise ConfigurationError("two webhooks have the same name in the fleet file; names must be unique")
    deployed = {a.name for a in registry.all()}
    for webhook in webhooks:
        unknown = sorted(set(webhook.agents) - deployed)
        if unknown:
            raise ConfigurationError(f"webhook {webhook.name!r} names agents not deployed here: {', '.join(unknown)}")
