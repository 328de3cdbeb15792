"""The composition root: builds the ports, the service and the handlers from ``Settings``.

Everything is built on first use, so each function pays at start only for what it serves: the API
never imports ``google.genai``, and the step function imports it on its first model call.
"""

from __future__ import annotations

import functools
import os
import socket
from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from agex.agent import Agent, AgentRegistry
from agex.approval_service import ApprovalService
from agex.auth import Authenticator, StaticTokenAuthenticator
from agex.clock import RandomIds, SystemClock
from agex.decision_signing import DecisionSigner, DecisionVerifier
from agex.engine.approvals import ApprovalApplier
from agex.engine.stepper import StepRunner, StepSettings
from agex.errors import ConfigurationError
from agex.http import limits
from agex.http.decision_push import DecisionPush
from agex.http.public_api import PublicApi
from agex.http.step_endpoint import StepEndpoint
from agex.obs import logging as log
from agex.obs import tracing
from agex.ports.checkpoint_store import CheckpointStore
from agex.ports.event_bus import EventBus
from agex.ports.limiter import Limiter
from agex.ports.model import Model
from agex.ports.secret_store import SecretStore
from agex.ports.task_queue import TaskQueue
from agex.pricing import Pricing
from agex.service import RunService
from agex.settings import Settings

if TYPE_CHECKING:
    from agex.gcp.firestore_store import FirestoreCheckpointStore


class Runtime:
    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or Settings()
        self.clock = SystemClock()
        self.ids = RandomIds()
        self.pricing = Pricing()
        log.setup(self.settings.project)
        tracing.setup()

    @functools.cached_property
    def agents(self) -> AgentRegistry:
        s = self.settings
        if s.fleet_file:
            from agex import fleet

            registry = fleet.registry(fleet.load(s.fleet_file), s.project)
        else:
            registry = AgentRegistry([a.model_copy(update={"identity": a.identity or f"agent-{a.name}@{s.project}"
                                                                         ".iam.gserviceaccount.com"})
                                      for a in AgentRegistry.from_specs(s.agent_specs).all()])
        for agent in registry.all():
            self.pricing.check(agent.model)
        return registry

    @functools.cached_property
    def store(self) -> CheckpointStore:
        return self._firestore

    @functools.cached_property
    def _firestore(self) -> FirestoreCheckpointStore:
        from agex.gcp.firestore_store import FirestoreCheckpointStore

        return FirestoreCheckpointStore(project=self.settings.project)

    @functools.cached_property
    def queue(self) -> TaskQueue:
        from agex.gcp.cloud_tasks import CloudTasksQueue

        s = self.settings
        return CloudTasksQueue(project=s.project, location=s.location, queue=s.queue, url=s.step_url,
                               service_account=s.step_service_account, audience=s.audience,
                               emulator_host=s.tasks_emulator_host, per_agent=s.per_agent_queues)

    @functools.cached_property
    def bus(self) -> EventBus:
        from agex.gcp.pubsub_bus import PubSubEventBus

        return PubSubEventBus(self.settings.project)

    @functools.cached_property
    def _model(self) -> Model:
        from agex.gcp.gemini import GeminiModel

        s = self.settings
        return GeminiModel(api_key=s.gemini_api_key, base_url=s.gemini_base_url, vertex=s.vertex, project=s.project,
                           location=s.location, timeout_seconds=s.model_timeout_seconds)

    def model_for(self, agent: Agent) -> Model:
        return self._model

    @functools.cached_property
    def service(self) -> RunService:
        return RunService(store=self.store, queue=self.queue, agents=self.agents, clock=self.clock, ids=self.ids,
                          max_input_bytes=self.settings.max_input_bytes,
                          sweep_after=timedelta(seconds=self.settings.sweep_after_seconds))

    @functools.cached_property
    def approval_service(self) -> ApprovalService:
        # the API publishes only when a decision is made: the Pub/Sub client and the signing key load then,
        # not at cold start
        return ApprovalService(store=self.store, bus=_LazyBus(lambda: self.bus), agents=self.agents,
                               clock=self.clock, ids=self.ids, signer=lambda: self.decision_signer)

    @functools.cached_property
    def decision_signer(self) -> DecisionSigner:
        """The API's signing key, read from Secret Manager as the API's own identity."""
        from agex.gcp.secret_manager import SecretManagerStore, emulator_clients, own_clients

        s = self.settings
        clients = emulator_clients(s.secrets_emulator_host) if s.secrets_emulator_host else own_clients()
        pem = SecretManagerStore(s.project, clients).access(s.api_service_account, s.decision_signing_key_secret)
        return DecisionSigner.from_pem("api", pem)

    @functools.cached_property
    def decision_verifier(self) -> DecisionVerifier:
        return DecisionVerifier.from_config(self.settings.decision_sources)

    @functools.cached_property
    def public_api(self) -> PublicApi:
        return PublicApi(service=self.service, approvals=self.approval_service, agents=self.agents,
                         authenticator=self.authenticator,
                         max_body_bytes=limits.body_limit(self.settings.max_input_bytes),
                         base_url=self.settings.public_url)

    @functools.cached_property
    def authenticator(self) -> Authenticator:
        s = self.settings
        if s.authenticator == "dev":
            return StaticTokenAuthenticator.parse(s.dev_tokens)
        from agex.gcp.oidc import GoogleIdTokenAuthenticator, GoogleIdTokens

        if not s.api_audience or not s.tenants:
            raise ConfigurationError("AGEX_AUTHENTICATOR=google needs AGEX_API_AUDIENCE (the API's URL) and "
                                     "AGEX_TENANTS (email-pattern=tenant pairs)")
        return GoogleIdTokenAuthenticator.parse(
            GoogleIdTokens(audience=s.api_audience, certs_url=s.oidc_certs_url), s.tenants)

    @functools.cached_property
    def step_endpoint(self) -> StepEndpoint:
        from agex.gcp.oidc import GoogleIdTokens, OidcVerifier

        s = self.settings
        runner = StepRunner(store=self.store, queue=self.queue, bus=self.bus, agents=self.agents,
                            models=self.model_for, pricing=self.pricing, clock=self.clock,
                            settings=StepSettings(lease_seconds=s.step_lease_seconds, public_url=s.public_url),
                            secrets=_LazySecrets(lambda: self.secret_store), limiter=self.limiter)
        verify = OidcVerifier(GoogleIdTokens(audience=s.audience, certs_url=s.oidc_certs_url), s.step_service_account)
        return StepEndpoint(runner=runner, service=self.service, approvals=self.applier, verify=verify,
                            instance=f"{socket.gethostname()}-{os.getpid()}")

    @functools.cached_property
    def secret_store(self) -> SecretStore:
        """Secret Manager, read as each agent's identity: through the emulator's bearer identities locally,
        by impersonating the agent's service account in the cloud. Built on the first tool that needs it."""
        from agex.gcp.secret_manager import SecretManagerStore, emulator_clients, impersonated_clients
        from agex.secrets import CachedSecrets

        s = self.settings
        clients = emulator_clients(s.secrets_emulator_host) if s.secrets_emulator_host else impersonated_clients()
        return CachedSecrets(SecretManagerStore(s.project, clients), ttl_s=s.secret_cache_seconds, clock=self.clock)

    @functools.cached_property
    def limiter(self) -> Limiter:
        # one Firestore client per process: the checkpoint store's
        from agex.gcp.firestore_limiter import FirestoreLimiter

        return FirestoreLimiter(self._firestore.client)

    @functools.cached_property
    def applier(self) -> ApprovalApplier:
        return ApprovalApplier(store=self.store, queue=self.queue, bus=self.bus, clock=self.clock,
                               agents=self.agents, verifier=self.decision_verifier)

    @functools.cached_property
    def decision_push(self) -> DecisionPush:
        """The ``approvals`` function's handler. Cloud Run IAM admits only the push identity, and the
        handler checks again itself: the push's OIDC token, then each decision's signature and the
        decider's authority (docs/security.md)."""
        from agex.gcp.oidc import GoogleIdTokens, OidcVerifier

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
    """The process-wide runtime, built from the environment on first use."""
    return Runtime()
