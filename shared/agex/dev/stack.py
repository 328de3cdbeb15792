"""Start the whole system on one machine: the SDK's Firestore and Pub/Sub emulators, our Cloud Tasks and
Gemini emulators, and the ``api``, ``step`` and ``approvals`` functions under functions-framework, with
the same client libraries as in the cloud. Everything binds to 127.0.0.1 and is stopped by ``stop()``.

The functions run under gunicorn (functions-framework's server): when a worker dies, gunicorn starts a
new one, the way Cloud Run replaces a lost instance. They import the agents from the project's directory
(``StackConfig.project_dir``: ``agex dev`` passes the current one) and from the repository's root.

``agex dev --backend memory`` runs the same system in one process instead: ``agex.dev.embedded``.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import threading
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from agex.app.settings import Settings
from agex.core.decision_signing import new_key_pair
from agex.dev.emulators.gcloud import (
    EmulatorProcess,
    free_port,
    spawn_and_wait,
    start_firestore,
    start_pubsub,
    start_python_emulator,
)

REPO = Path(__file__).resolve().parents[3]
HOST = "127.0.0.1"
ADMIN = "admin@agex-local.iam.gserviceaccount.com"
"""The Secret Manager emulator's admin: the deploying identity (Terraform's, in the cloud)."""
APPROVALS_PUSH_SUBSCRIPTION = "agex-approvals-push"
PUSH_IDENTITY = "agex-push@agex-local.iam.gserviceaccount.com"
"""Who the decisions push subscription's OIDC tokens are minted for (Terraform's ``agex-push``)."""
INSPECT_SUBSCRIPTIONS = {
    # a topic with no subscription drops what is published; these keep it for `agex dev` users to read
    # (``gcloud pubsub subscriptions pull``): notifiers subscribe the same way in the cloud
    "agex-approval-requests": "agex-approval-requests-local",
    "agex-approval-decisions-dead": "agex-approval-decisions-dead-local",
    "agex-run-events": "agex-run-events-local",
    "agex-security-alerts": "agex-security-alerts-local",
    "agex-drift-alerts": "agex-drift-alerts-local",
    "agex-budget-alerts": "agex-budget-alerts-local",
}
SCHEDULER_IDENTITY = "agex-scheduler@agex-local.iam.gserviceaccount.com"
"""Who Cloud Scheduler's OIDC tokens for the drift function are minted for (Terraform's scheduler identity)."""
DEV_TOKENS = "dev-token=dev:dev@example.com,manager-token=dev:manager@example.com,acme-token=acme:ops@acme.test"
"""The local API tokens (``AGEX_DEV_TOKENS``): ``manager-token`` is the sample support agent's approver, a
different person from ``dev-token``'s (four eyes); ``acme-token`` is a second tenant."""


@dataclass
class StackConfig:
    api_port: int = 8080
    project: str = "agex-local"
    workdir: Path = field(default_factory=lambda: Path(".agex"))
    fleet_file: Path | None = field(default_factory=lambda: REPO / "examples" / "fleet.yaml")
    """The agents, their identities and granted secrets (``agex.app.fleet``); None to run ``agents``."""
    agents: str = ""
    """Without a fleet file: the agents' ``module:attribute`` specs, comma-separated (``AGEX_AGENTS``). They
    are granted no secrets."""
    project_dir: Path | None = None
    """The project whose agents run (``agex dev`` passes the current directory): first on the functions'
    ``PYTHONPATH``, before the repository, and their working directory."""
    secrets: dict[str, str] = field(default_factory=dict)
    """Secret values to create in the Secret Manager emulator; each is granted to the agents the fleet
    file grants it to, and to no one else."""
    scenarios: Path = field(default_factory=lambda: REPO / "examples" / "scenarios")
    dev_tokens: str = DEV_TOKENS
    sweep_every_seconds: float = 10.0
    sweep_after_seconds: float = 30.0
    drift_every_seconds: float = 5.0
    """How often the drift check runs (hourly in the cloud)."""
    drift_window_seconds: float = 3600.0
    step_lease_seconds: float = 30.0
    queue_min_backoff_seconds: float = 0.2
    queue_max_backoff_seconds: float = 5.0
    keep_model_requests: bool = False
    """Make the Gemini emulator keep request bodies (for tests of what the model is sent)."""
    step_workers: int = 1
    api_threads: int = 128
    """Requests the API serves at once, each on a thread: followed runs (``?follow=true``) hold one each."""
    """Processes of the step function (gunicorn workers): more than one to see limits held across
    instances, as several Cloud Run instances would."""
    push_min_backoff_seconds: float = 1.0
    push_max_backoff_seconds: float = 10.0
    push_max_delivery_attempts: int = 5
    decision_sources: dict[str, str] = field(default_factory=dict)
    """More declared decision sources (a chat bot's name and Ed25519 public key, PEM) beside the API's."""
    model_settings: dict[str, str] = field(default_factory=dict)
    """``AGEX_*`` settings of a real model (``agex.dev.models.settings_for``); empty: the Gemini emulator."""
    extra_env: dict[str, str] = field(default_factory=dict)


class Stack:
    def __init__(self, config: StackConfig | None = None) -> None:
        self.config = config or StackConfig()
        self.processes: list[EmulatorProcess] = []
        self.env: dict[str, str] = {}
        self.api_url = ""
        self.step_url = ""
        self.approvals_url = ""
        self.drift_url = ""
        self.gemini_url = ""
        self.tasks_host = ""
        self.tasks_http = ""
        self.secrets_host = ""
        self._stop = threading.Event()
        self._sweeper: threading.Thread | None = None
        self._drifter: threading.Thread | None = None
        self._firer: threading.Thread | None = None
        self._functions: dict[str, EmulatorProcess] = {}
        self._ports: dict[str, int] = {}
        # the API's decision signing key: its private half in the Secret Manager emulator, readable by the
        # API's identity alone; its public half declared to the approvals function (as Terraform does)
        self._decision_key, self._decision_public_key = new_key_pair()

    # --- lifecycle ------------------------------------------------------------------------------------

    def start(self) -> Stack:
        c = self.config
        if c.fleet_file is None and not c.agents.strip():
            raise ValueError("the stack needs agents: a fleet file (fleet_file) or module:attribute specs (agents)")
        logs = c.workdir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        try:
            firestore = self._keep(start_firestore(log_path=str(logs / "firestore.log")))
            pubsub = self._keep(start_pubsub(c.project, log_path=str(logs / "pubsub.log")))
            # our emulators pick their ports and name them in their READY lines
            tasks = self._keep(self._python("cloudtasks", ["--port", "0", "--http-port", "0"], logs))
            secrets = self._keep(self._python("secretmanager", ["--port", "0", "--admin", ADMIN], logs))
            self.secrets_host = secrets.endpoints["grpc"]
            gemini = self._keep(self._python("gemini", ["--port", "0", "--scenarios", str(c.scenarios),
                                                        *(["--keep-bodies"] if c.keep_model_requests else [])], logs))
            step_port, approvals_port, drift_port = free_port(), free_port(), free_port()
            self.tasks_host, self.tasks_http = tasks.endpoints["grpc"], f"http://{tasks.endpoints['http']}"
            self.gemini_url = f"http://{gemini.endpoints['http']}"
            self.step_url = f"http://{HOST}:{step_port}/"
            self.approvals_url = f"http://{HOST}:{approvals_port}/"
            self.drift_url = f"http://{HOST}:{drift_port}/"
            self.api_url = f"http://{HOST}:{c.api_port}"
            self.env = {
                "FIRESTORE_EMULATOR_HOST": firestore.host_port,
                "PUBSUB_EMULATOR_HOST": pubsub.host_port,
                "GOOGLE_CLOUD_PROJECT": c.project,
                "AGEX_PROJECT": c.project,
                **({"AGEX_FLEET_FILE": str(Path(c.fleet_file).resolve())} if c.fleet_file is not None
                   else {"AGEX_AGENTS": c.agents, "AGEX_FLEET_FILE": ""}),  # not one from this environment
                "AGEX_SECRETS_EMULATOR_HOST": self.secrets_host,
                "AGEX_TASKS_EMULATOR_HOST": self.tasks_host,
                "AGEX_STEP_URL": self.step_url,
                "AGEX_OIDC_CERTS_URL": f"{self.tasks_http}/oauth2/v1/certs",
                "AGEX_GEMINI_BASE_URL": self.gemini_url,
                "AGEX_GEMINI_API_KEY": "local-emulator-key",
                "AGEX_DEV_TOKENS": c.dev_tokens,
                "AGEX_STEP_LEASE_SECONDS": str(c.step_lease_seconds),
                "AGEX_SWEEP_AFTER_SECONDS": str(c.sweep_after_seconds),
                "AGEX_PUBLIC_URL": self.api_url,
                "AGEX_CONSOLE_LOG_DIR": str((c.workdir / "logs").resolve()),
                "AGEX_EXAMPLE_LEDGER": str((c.workdir / "refunds.sqlite").resolve()),
                "AGEX_DECISIONS_PUSH_SERVICE_ACCOUNT": PUSH_IDENTITY,
                "AGEX_DECISIONS_PUSH_AUDIENCE": self.approvals_url,
                "AGEX_DRIFT_URL": self.drift_url,
                "AGEX_DRIFT_INVOKER": SCHEDULER_IDENTITY,
                "AGEX_DRIFT_INTERVAL_SECONDS": str(c.drift_every_seconds),
                "AGEX_DRIFT_WINDOW_SECONDS": str(c.drift_window_seconds),
                "AGEX_DECISION_SOURCES": json.dumps({"api": [self._decision_public_key],
                                                     **{k: [v] for k, v in c.decision_sources.items()}}),
                **c.model_settings,
                **c.extra_env,
            }
            self._provision()
            self._ports = {"step": step_port, "approvals": approvals_port, "api": c.api_port, "drift": drift_port}
            for name, port in self._ports.items():
                self._functions[name] = self._keep(self._function(name, port, logs))
            self._subscribe_approvals()
            # the scheduler's jobs get their client here: a thread entering client_env() while another is in it
            # would restore the other's values, and leave this process pointed at the stack after it stops
            from agex.adapters.gcp.cloud_tasks import make_client

            with self.client_env():
                scheduler = make_client(self.tasks_host)
            self._sweeper = threading.Thread(target=self._sweep_loop, args=(scheduler, Settings().step_service_account),
                                             name="agex-sweeper", daemon=True)
            self._sweeper.start()
            self._drifter = threading.Thread(target=self._drift_loop, args=(scheduler,), name="agex-drift", daemon=True)
            self._drifter.start()
            self._firer = threading.Thread(target=self._schedule_loop, args=(scheduler, Settings().step_service_account),
                                           name="agex-schedules", daemon=True)
            self._firer.start()
        except BaseException:
            self.stop()
            raise
        return self

    def redeploy(self, fleet_file: Path) -> None:
        """Deploy other agent code (a new version): the functions restart on the same ports with another fleet
        file, as a new revision would replace them, on the same emulators and their data."""
        self.config.fleet_file = fleet_file
        self.env["AGEX_FLEET_FILE"] = str(Path(fleet_file).resolve())
        logs = self.config.workdir / "logs"
        for name, port in self._ports.items():
            old = self._functions[name]
            old.stop(grace=5.0)
            self.processes.remove(old)
            self._functions[name] = self._keep(self._function(name, port, logs))

    def stop(self) -> None:
        self._stop.set()
        for proc in reversed(self.processes):
            with contextlib.suppress(Exception):
                proc.stop(grace=3.0)
        self.processes.clear()

    def __enter__(self) -> Stack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @contextlib.contextmanager
    def client_env(self) -> Iterator[None]:
        """Point this process's Google clients at the stack's emulators for the block."""
        saved = {k: os.environ.get(k) for k in self.env}
        os.environ.update(self.env)
        try:
            yield
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v

    def describe(self) -> dict[str, str]:
        c = self.config
        agents = {"fleet": str(c.fleet_file)} if c.fleet_file is not None else {"agents": c.agents}
        return {"api": self.api_url, "step": self.step_url, "approvals": self.approvals_url, "drift": self.drift_url,
                "gemini": self.gemini_url,
                "cloud_tasks": self.tasks_host, "secret_manager": self.secrets_host, "firestore": self.env.get("FIRESTORE_EMULATOR_HOST", ""),
                "pubsub": self.env.get("PUBSUB_EMULATOR_HOST", ""), **agents, "scenarios": str(c.scenarios),
                "logs": str(c.workdir / "logs")}

    # --- pieces ---------------------------------------------------------------------------------------

    def _keep(self, proc: EmulatorProcess) -> EmulatorProcess:
        self.processes.append(proc)
        return proc

    def _provision(self) -> None:
        """Create what Terraform creates in the cloud: the step queue, the topics and their subscriptions
        (the approvals function's push subscription once it is up: see ``_subscribe_approvals``)."""
        from agex.adapters.gcp.cloud_tasks import ensure_queue, make_client
        from agex.adapters.gcp.pubsub_bus import ensure_subscription, ensure_topics
        from agex.core.approval import APPROVAL_REQUESTS_TOPIC, DECISIONS_DEAD_LETTER_TOPIC, DECISIONS_TOPIC
        from agex.core.guard import SECURITY_ALERTS_TOPIC
        from agex.core.metrics import DRIFT_ALERTS_TOPIC
        from agex.core.spend import BUDGET_ALERTS_TOPIC
        from agex.engine.notify import RUN_EVENTS_TOPIC

        c = self.config
        with self.client_env():
            client = make_client(self.tasks_host)
            ensure_queue(client, client.queue_path(c.project, "us-central1", "agex-steps"),
                         min_backoff_s=c.queue_min_backoff_seconds, max_backoff_s=c.queue_max_backoff_seconds)
            ensure_topics(c.project, (RUN_EVENTS_TOPIC, APPROVAL_REQUESTS_TOPIC, DECISIONS_TOPIC,
                                      DECISIONS_DEAD_LETTER_TOPIC, SECURITY_ALERTS_TOPIC, DRIFT_ALERTS_TOPIC,
                                      BUDGET_ALERTS_TOPIC))
            for topic, subscription in INSPECT_SUBSCRIPTIONS.items():
                ensure_subscription(c.project, topic, subscription)
        self._provision_secrets()

    def _provision_secrets(self) -> None:
        """What Terraform does for secrets: each secret readable by exactly the agents granted it."""
        from agex.adapters.gcp.secret_manager import ensure_secret
        from agex.app import fleet
        from agex.dev.emulators.secretmanager.client import make_client

        c = self.config
        # agents without a fleet file are granted nothing: only the fleet file says who may read what
        declared = fleet.load(c.fleet_file) if c.fleet_file is not None else fleet.Fleet(agents={})
        admin = make_client(self.secrets_host, ADMIN)
        names = sorted({s for a in declared.agents.values() for s in a.secrets} | set(c.secrets))
        for name in names:
            accessors = [fleet.identity_email(a.identity, c.project) for a in declared.agents.values()
                         if name in a.secrets]
            ensure_secret(admin, c.project, name, c.secrets.get(name), accessors)
        settings = Settings()
        ensure_secret(admin, c.project, settings.decision_signing_key_secret, self._decision_key,
                      [settings.api_service_account])

    def _subscribe_approvals(self) -> None:
        """The decisions topic pushes to the approvals function, dead-lettering what it keeps refusing."""
        from agex.adapters.gcp.pubsub_bus import ensure_subscription
        from agex.core.approval import DECISIONS_DEAD_LETTER_TOPIC, DECISIONS_TOPIC

        c = self.config
        # through the Cloud Tasks emulator's push relay, which attaches the OIDC token the Pub/Sub emulator
        # does not (agex.dev.emulators.cloudtasks.http_endpoints): the approvals function checks it as in the cloud
        relay = f"{self.tasks_http}/_emulator/push?" + urllib.parse.urlencode(
            {"endpoint": self.approvals_url, "email": PUSH_IDENTITY, "audience": self.approvals_url})
        with self.client_env():
            ensure_subscription(c.project, DECISIONS_TOPIC, APPROVALS_PUSH_SUBSCRIPTION, push_endpoint=relay,
                                dead_letter_topic=DECISIONS_DEAD_LETTER_TOPIC,
                                max_delivery_attempts=c.push_max_delivery_attempts,
                                min_backoff_s=c.push_min_backoff_seconds, max_backoff_s=c.push_max_backoff_seconds,
                                ack_deadline_seconds=30)

    def _python(self, name: str, args: list[str], logs: Path) -> EmulatorProcess:
        return start_python_emulator(f"agex.dev.emulators.{name}", ["--host", HOST, *args],
                                     log_path=str(logs / f"{name}.log"), cwd=str(REPO))

    def _function(self, target: str, port: int, logs: Path) -> EmulatorProcess:
        c = self.config
        argv = [sys.executable, "-m", "functions_framework", "--target", target,
                "--source", str(REPO / "functions" / target / "main.py"), "--host", HOST, "--port", str(port)]
        # the project's agents import from its directory; the repository's examples and tests from its root
        path = [str(Path(c.project_dir).resolve())] if c.project_dir is not None else []
        env = {**os.environ, **self.env, "PYTHONUNBUFFERED": "1",
               "PYTHONPATH": os.pathsep.join(dict.fromkeys([*path, str(REPO)]))}
        if target == "step":
            env["WORKERS"] = str(c.step_workers)
        if target == "api":
            env["THREADS"] = str(c.api_threads)
        return spawn_and_wait(target, argv, port, str(logs / f"{target}.log"), 60,
                              ready=lambda: _answers(f"http://{HOST}:{port}/healthz"), env=env,
                              cwd=str(c.project_dir if c.project_dir is not None else REPO))

    def _sweep_loop(self, client: Any, service_account: str) -> None:
        """Cloud Scheduler's job locally: ask the step function to sweep, through Cloud Tasks so the
        request carries the same OIDC token a scheduled job's would."""
        from agex.adapters.gcp.cloud_tasks import post_with_oidc

        queue = client.queue_path(self.config.project, "us-central1", "agex-steps")
        while not self._stop.wait(self.config.sweep_every_seconds):
            with contextlib.suppress(Exception):  # a missed sweep is made up by the next one
                post_with_oidc(client, queue, url=self.step_url + "sweep", service_account=service_account,
                               audience=self.step_url)

    def _schedule_loop(self, client: Any, service_account: str) -> None:
        """Cloud Scheduler's jobs of the fleet file's schedules: each due time, a POST to the step function's
        ``/schedules/{name}:fire`` with the time it was due, through Cloud Tasks like the sweep (the fleet file
        is read again after a redeploy)."""
        from agex.adapters.gcp.cloud_tasks import post_with_oidc
        from agex.app import fleet
        from agex.engine.schedules import next_due

        queue = client.queue_path(self.config.project, "us-central1", "agex-steps")
        loaded: object = object()  # not yet read: anything the fleet file setting cannot be
        schedules: list[Any] = []
        due: dict[str, datetime] = {}
        while not self._stop.wait(1.0):
            now = datetime.now(UTC)
            if self.config.fleet_file != loaded:
                loaded = self.config.fleet_file
                schedules = fleet.load(loaded).schedules if loaded is not None else []
                due = {s.name: next_due(s, now) for s in schedules}
            for schedule in schedules:
                if due[schedule.name] > now:
                    continue
                with contextlib.suppress(Exception):  # a firing lost here is lost, as a failed job's would be
                    post_with_oidc(client, queue, url=f"{self.step_url}schedules/{schedule.name}:fire",
                                   service_account=service_account, audience=self.step_url,
                                   headers={"X-CloudScheduler-ScheduleTime": due[schedule.name].isoformat()})
                due[schedule.name] = next_due(schedule, now)

    def _drift_loop(self, client: Any) -> None:
        """Cloud Scheduler's drift job locally, with the OIDC token of the scheduler's identity."""
        from agex.adapters.gcp.cloud_tasks import post_with_oidc

        queue = client.queue_path(self.config.project, "us-central1", "agex-steps")
        while not self._stop.wait(self.config.drift_every_seconds):
            with contextlib.suppress(Exception):  # a missed check is made up by the next one
                post_with_oidc(client, queue, url=self.drift_url, service_account=SCHEDULER_IDENTITY,
                               audience=self.drift_url)


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as r:  # noqa: S310 - loopback only
            return r.status < 500
    except urllib.error.HTTPError as e:
        return e.code < 500
    except OSError:
        return False

