"""Process settings, from ``AGEX_*`` environment variables (documented in docs/operations.md).

The Google client libraries read their own emulator variables (``FIRESTORE_EMULATOR_HOST``,
``PUBSUB_EMULATOR_HOST``); ours are ``AGEX_TASKS_EMULATOR_HOST`` and ``AGEX_GEMINI_BASE_URL``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from agex.core.pricing import Price
from agex.core.spend import Budget


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="AGEX_", extra="ignore")

    project: str = "agex-local"
    store: str = ""
    """Where run state (heads, events, approvals, the spend ledger) lives: empty for Firestore, or a Postgres DSN,
    ``postgresql://user:password@host:5432/database`` (docs/storage.md, "Run state on Postgres")."""
    store_schema: str = "agex"
    """The Postgres schema of the run state, with a Postgres ``store``."""
    memory_store: str = ""
    """Where long-term memory lives (docs/memory.md): empty, beside the run state (Postgres with pgvector when
    ``AGEX_STORE`` is a DSN, else Firestore); ``firestore``; or a Postgres DSN of its own."""
    embeddings: str = "local"
    """How long-term memory turns text into vectors (docs/memory.md, "Embeddings"): ``local`` (all-MiniLM-L6-v2 on
    the instance's CPU, offline) or ``gemini:MODEL`` (``gemini:gemini-embedding-001``, with the model's settings)."""
    embedding_dimensions: int = 768
    """The size of Gemini embeddings (``outputDimensionality``); the local model's is 384 whatever this says. The
    Firestore vector index must be declared with the same size (Terraform ``memory_embedding_dimensions``)."""
    limiter: str = "firestore"
    """Where tools' limits are held across instances: ``firestore``, or a Redis URL ``redis://host:port/db``
    (``rediss://`` for TLS) that every instance reaches (docs/storage.md)."""
    location: str = "us-central1"
    agents: str = ""
    """Comma-separated ``module:attribute`` specs of the agents this deployment runs (without a fleet file).
    A deployment with neither refuses to start."""
    fleet_file: str = ""
    """The fleet file (agents, identities, granted secrets, budgets; see ``agex.app.fleet``). When set, it is
    the list of agents and ``agents`` is ignored."""
    secrets_emulator_host: str = ""
    """``host:port`` of the Secret Manager emulator; empty in the cloud (agent identities are impersonated)."""
    secret_cache_seconds: float = 60.0
    """How long a secret value read for a tool is reused; a rotation is picked up after at most this."""

    # step tasks
    queue: str = "agex-steps"
    per_agent_queues: bool = False
    """Each agent's tasks go to its own queue ``{queue}-{agent}`` (Terraform creates one per agent, with the
    fleet file's rate and retry settings); off locally, where one queue serves every agent."""
    step_url: str = "http://127.0.0.1:8081/"
    """Where Cloud Tasks delivers step tasks: the ``step`` function's URL."""
    step_service_account: str = "agex-step@agex-local.iam.gserviceaccount.com"
    """The identity Cloud Tasks signs the OIDC token as; the step function accepts only this one."""
    step_audience: str = ""
    """Audience of the OIDC token; defaults to ``step_url``."""
    oidc_certs_url: str = "https://www.googleapis.com/oauth2/v1/certs"
    """Where the step function fetches the keys that sign OIDC tokens; the emulator's locally."""
    tasks_emulator_host: str = ""
    step_lease_seconds: float = 60.0
    """How long a step's lease outlives its last renewal (a working attempt renews it every third of this):
    how long a dead attempt blocks its step before another takes it over."""
    step_issue_lease: bool = True
    """A step's commit issues the next step's lease to its task, whose first delivery then starts without a claim
    write: two commits a step instead of three. Off, every delivery claims its step before calling the model, so a
    duplicate delivery of a step's first attempt never pays for a model call (docs/architecture.md, "Issued
    leases")."""
    sweep_after_seconds: float = 300.0
    """An active run with no write for this long and no live task is re-enqueued by the sweep."""

    # model
    gemini_api_key: str = ""
    gemini_api_key_secret: str = ""
    """A Secret Manager secret holding the Gemini API key, read with the function's own identity (instead of
    ``gemini_api_key``)."""
    gemini_base_url: str = ""
    """Base URL of the Gemini API; set to the emulator's locally."""
    vertex: bool = False
    """Use Vertex AI (project and location, application default credentials) instead of an API key."""
    model_timeout_seconds: float = 60.0
    model_provider: Literal["gemini", "openai"] = "gemini"
    """``gemini``: the Gemini API (``gemini_api_key``), or Vertex AI with ``vertex``; ``openai``: any
    OpenAI-compatible chat-completions endpoint at ``openai_base_url`` (Ollama, vLLM, llama.cpp's server)."""
    openai_base_url: str = "http://127.0.0.1:11434/v1"
    openai_api_key: str = ""
    openai_api_key_secret: str = ""
    """A Secret Manager secret holding the endpoint's key, read with the function's own identity (instead of
    ``openai_api_key``)."""
    breaker_failures: int = Field(default=5, ge=1)
    """Failures of a model (429, 5xx, timeouts) within ``breaker_window_seconds`` that open its circuit: every
    instance then skips it for the agents' fallbacks for ``breaker_cooldown_seconds``."""
    breaker_window_seconds: float = Field(default=30.0, gt=0)
    breaker_cooldown_seconds: float = Field(default=60.0, gt=0)
    context_cache: Literal["auto", "off"] = "auto"
    """``auto``: Gemini caches an agent's instructions and tool declarations once they are long enough to be
    cached (docs/models.md, "Context caching"); ``off``: never."""
    context_cache_ttl_seconds: int = Field(default=3600, ge=60)
    budgets: list[Budget] = Field(default_factory=list)
    """Budgets across runs (docs/budgets.md), as JSON: ``[{"name": "tenant-day", "scope": "tenant",
    "window": "day", "max_cost_usd": 20, "action": "refuse"}]``; added to the fleet file's."""
    budget_cache_seconds: float = Field(default=5.0, ge=0)
    """How long a budget's spend, read far from its cap, may be reused by an instance (0: read every check)."""
    model: str = ""
    """Run every agent on this model instead of the one it declares (a local model in development)."""
    prices: dict[str, Price] = Field(default_factory=dict)
    """Prices of models beyond the built-in table, USD per million tokens, as JSON:
    ``{"llama3.2": {"input_per_mtok": 0, "output_per_mtok": 0}}``. A model without a price is refused at
    start; a local model is priced at zero explicitly."""

    # API
    authenticator: Literal["dev", "google"] = "dev"
    """``dev``: the static tokens of ``dev_tokens``. ``google``: Google-signed ID tokens for
    ``api_audience``, mapped to tenants by ``tenants``."""
    api_audience: str = ""
    tenants: str = ""
    """``email-pattern=tenant`` pairs, comma-separated, for the ``google`` authenticator."""
    dev_tokens: str = "dev-token=dev:dev@example.com"
    """``token=tenant:principal`` pairs, comma-separated, for the dev authenticator. Empty disables it."""
    max_input_bytes: int = Field(default=32 * 1024, ge=1)
    max_wait_seconds: float = Field(default=50.0, ge=0)
    """The longest ``?wait=`` a request may ask for: under the API's request timeout (Cloud Run's, 60 s for
    the API function unless raised)."""
    stream_max_seconds: float = Field(default=3300.0, gt=0)
    """How long one event stream (``?follow=true``) stays open before it asks the client to reconnect: under
    the API function's request timeout (Terraform sets it to an hour)."""
    request_timeout_seconds: float = Field(default=10.0, gt=0)
    """How long the API waits for a request's head and body before it answers 408 (slow clients hold a
    socket, never a worker thread: ``agex.app.http.limits``)."""
    public_url: str = ""
    """Base URL put in links of API responses; empty for relative links."""
    console: bool = True
    """Serve the browser console under ``/console`` (docs/console.md)."""
    console_iap_audience: str = ""
    """When Identity-Aware Proxy fronts the API (docs/console.md): the audience of its signed header
    (``/projects/NUMBER/global/backendServices/ID``). People then sign in to the console with Google through IAP,
    mapped to tenants by ``AGEX_TENANTS``."""
    console_iap_certs_url: str = "https://www.gstatic.com/iap/verify/public_key"
    console_log_dir: str = ""
    """A directory of the functions' JSON log files (the local stack's): the console shows a run's log lines from
    it. Empty in the cloud, where the console links to Cloud Trace and Cloud Logging instead."""

    failpoints_file: str = ""
    """Chaos drills: the file that arms failpoints (``agex.adapters.failpoints``); empty in production."""

    # approvals
    decisions_push_service_account: str = "agex-push@agex-local.iam.gserviceaccount.com"
    """The identity of the decisions push subscription's OIDC tokens: the approvals function accepts no other."""
    decisions_push_audience: str = ""
    """The audience of those tokens (the approvals function's URL); the approvals function refuses to start
    without it."""
    decision_sources: dict[str, list[str]] = Field(default_factory=dict)
    """The declared decision sources and their Ed25519 public keys (PEM), as JSON:
    ``{"api": ["-----BEGIN PUBLIC KEY-----\n..."]}``. The approvals function applies only decisions one of
    these keys signed; two keys of a source while it rotates."""
    decision_signing_key_secret: str = "agex-decision-signing-key"
    """The Secret Manager secret that holds the API's Ed25519 private key (PEM), readable by the API alone."""
    api_service_account: str = "agex-api@agex-local.iam.gserviceaccount.com"
    """The API's identity, as which it reads the signing key from the Secret Manager emulator locally (in the
    cloud it reads with the function's own credentials)."""

    # drift (the drift function; docs/observability.md)
    drift_url: str = ""
    """The drift function's URL: the audience of the scheduler's OIDC tokens, which it checks."""
    drift_audience: str = ""
    """Audience of those tokens; defaults to ``drift_url``."""
    drift_invoker: str = "agex-scheduler@agex-local.iam.gserviceaccount.com"
    """The identity Cloud Scheduler signs its OIDC token as; the drift function accepts only this one."""
    drift_window_seconds: float = Field(default=86_400.0, gt=0)
    """Length of a drift window: the current side of each comparison, and the unit of alert deduplication."""
    drift_interval_seconds: float = Field(default=3_600.0, gt=0)
    """How often the drift check runs (the schedule): the false-alarm budget is split across the checks of
    a window."""
    drift_alpha: float = Field(default=0.01, gt=0, lt=1)
    """Probability of a false alarm per agent version and window, across all metrics and checks."""
    drift_min_runs: int = Field(default=30, ge=5)
    drift_baseline_seconds: float = Field(default=7 * 86_400.0, gt=0)
    drift_settle_seconds: float = Field(default=60.0, ge=0)

    @property
    def audience(self) -> str:
        return self.step_audience or self.step_url

    @property
    def agent_specs(self) -> list[str]:
        return [s.strip() for s in self.agents.split(",") if s.strip()]
