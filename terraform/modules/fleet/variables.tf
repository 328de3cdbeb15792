variable "project" {
  description = "Google Cloud project id the fleet runs in."
  type        = string
}

variable "region" {
  description = "Region of the functions, Cloud Tasks queues, Cloud Scheduler jobs and Vertex AI calls (AGEX_LOCATION)."
  type        = string
}

variable "firestore_location" {
  description = "Firestore location (a region such as us-central1, or a multi-region such as nam5). Null: the region. Cannot change after creation."
  type        = string
  default     = null
}

variable "firestore_delete_protection" {
  description = "Refuse to delete the Firestore database (also on terraform destroy). On in prod."
  type        = bool
  default     = true
}

variable "agents" {
  description = "The `agents` map of the fleet file (yamldecode of it): name => {module, identity, secrets, queue, canary, ...}. Used here for the fleet-wide checks (no secret or identity shared by two agents) and for the red-team canaries (each agent's optional `canary` key: canary.tf)."
  type        = any
}

variable "schedules" {
  description = "The `schedules` list of the fleet file (yamldecode of it): {name, agent, cron, time_zone, input, tenant, ...}. Each becomes a Cloud Scheduler job that fires it through the step function (scheduler.tf); the runtime checks them against the agents at start."
  type        = any
  default     = []
}

variable "webhooks" {
  description = "The `webhooks` list of the fleet file (yamldecode of it): {name, url, secret, tenants, agents}. Each secret is created (without a version: add the signing key out of band) and readable by the step function alone (webhooks.tf)."
  type        = any
  default     = []
}

variable "fleet_file" {
  description = "Path of the fleet file. It is shipped in the function source as fleet.yaml (AGEX_FLEET_FILE)."
  type        = string
}

variable "repo_root" {
  description = "The repository root (shared/agex, examples, functions are zipped from it). Null: three levels above this module."
  type        = string
  default     = null
}

variable "agent_packages" {
  description = "Directories of the repository (relative to its root) holding the agents' code, shipped in the function source zip: the fleet file's module paths must resolve inside them (e.g. examples.support_agent:agent)."
  type        = list(string)
  default     = ["examples"]
}

variable "source_object" {
  description = "Name of a prebuilt source zip already uploaded to the source bucket (for example by Cloud Build). Null: Terraform zips the repository itself and uploads it."
  type        = string
  default     = null
}

variable "api_invokers" {
  description = "Members allowed to invoke the api function (roles/run.invoker), e.g. [\"group:agex-users@example.com\", \"serviceAccount:app@p.iam.gserviceaccount.com\"]. Named identities only: the public members are refused."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for m in var.api_invokers : can(regex("^(user|group|serviceAccount|domain|principal|principalSet):.+", m))])
    error_message = "api_invokers must be named members (user:, group:, serviceAccount:, domain:, principal:, principalSet:); the public members are refused."
  }
}

variable "tenants" {
  description = "AGEX_TENANTS: email-pattern=tenant pairs, comma-separated, for the google authenticator (e.g. \"*@acme.com=acme\")."
  type        = string
}

variable "api_audience" {
  description = "AGEX_API_AUDIENCE: the audience API callers' ID tokens must carry. Null: the api function's deterministic run.app URL."
  type        = string
  default     = null
}

variable "public_url" {
  description = "AGEX_PUBLIC_URL: base of links in API responses and approval requests. Null: the api function's URL."
  type        = string
  default     = null
}

variable "internal_ingress" {
  description = "Ingress of the step, approvals and drift functions. ALLOW_INTERNAL_ONLY admits Cloud Tasks, Cloud Scheduler, Pub/Sub and Eventarc of this project and refuses the internet; every request still needs an OIDC token of the one invoker identity."
  type        = string
  default     = "ALLOW_INTERNAL_ONLY"

  validation {
    condition     = contains(["ALLOW_INTERNAL_ONLY", "ALLOW_INTERNAL_AND_GCLB", "ALLOW_ALL"], var.internal_ingress)
    error_message = "internal_ingress must be ALLOW_INTERNAL_ONLY, ALLOW_INTERNAL_AND_GCLB or ALLOW_ALL."
  }
}

variable "console_iap" {
  description = "The console behind Identity-Aware Proxy (console.tf, docs/console.md): the domain of its HTTPS load balancer, the members IAP lets through (user:, group:, domain:), and, from the second apply, the audience of IAP's header (terraform output console_iap_audience). null: no load balancer; the console then needs a token."
  type = object({
    domain   = string
    members  = list(string)
    audience = optional(string, "")
  })
  default = null

  validation {
    condition     = var.console_iap == null || alltrue([for m in try(var.console_iap.members, []) : can(regex("^(user|group|domain|serviceAccount|principal|principalSet):.+", m))])
    error_message = "console_iap.members must be named members (user:, group:, domain:, serviceAccount:, principal:, principalSet:); the public members are refused."
  }
}

variable "api_ingress" {
  description = "Ingress of the api function (callers still need roles/run.invoker and a valid ID token)."
  type        = string
  default     = "ALLOW_ALL"

  validation {
    condition     = contains(["ALLOW_INTERNAL_ONLY", "ALLOW_INTERNAL_AND_GCLB", "ALLOW_ALL"], var.api_ingress)
    error_message = "api_ingress must be ALLOW_INTERNAL_ONLY, ALLOW_INTERNAL_AND_GCLB or ALLOW_ALL."
  }
}

variable "functions" {
  description = "Sizing and instance limits of each function. min_instances 0 costs nothing at rest; the step timeout must exceed AGEX_STEP_LEASE_SECONDS (60 s), which a working step renews."
  type = object({
    api = optional(object({
      memory          = optional(string, "512Mi")
      cpu             = optional(string, "1")
      timeout_seconds = optional(number, 3600)
      concurrency     = optional(number, 80)
      min_instances   = optional(number, 0)
      max_instances   = optional(number, 10)
    }), {})
    step = optional(object({
      memory          = optional(string, "1Gi")
      cpu             = optional(string, "1")
      timeout_seconds = optional(number, 300)
      concurrency     = optional(number, 8)
      min_instances   = optional(number, 0)
      max_instances   = optional(number, 20)
    }), {})
    approvals = optional(object({
      memory          = optional(string, "512Mi")
      cpu             = optional(string, "1")
      timeout_seconds = optional(number, 60)
      concurrency     = optional(number, 20)
      min_instances   = optional(number, 0)
      max_instances   = optional(number, 5)
    }), {})
    drift = optional(object({
      memory          = optional(string, "512Mi")
      cpu             = optional(string, "1")
      timeout_seconds = optional(number, 300)
      concurrency     = optional(number, 1)
      min_instances   = optional(number, 0)
      max_instances   = optional(number, 1)
    }), {})
  })
  default = {}

  validation {
    condition     = var.functions.step.timeout_seconds > 60
    error_message = "functions.step.timeout_seconds must exceed the step lease (AGEX_STEP_LEASE_SECONDS, 60 s)."
  }
}

variable "log_level" {
  description = "AGEX_LOG_LEVEL of every function."
  type        = string
  default     = "INFO"
}

variable "alert_channels" {
  description = "Monitoring notification channel ids (projects/P/notificationChannels/N) the alert policies notify."
  type        = list(string)
  default     = []
}

variable "run_failure_rate_threshold" {
  description = "Alert when failed runs / finished runs over 15 minutes exceeds this."
  type        = number
  default     = 0.1
}

variable "step_latency_threshold_seconds" {
  description = "Alert when the 95th percentile of step request latency over 10 minutes exceeds this."
  type        = number
  default     = 60
}

variable "slo_run_success_goal" {
  description = "SLO: fraction of finished runs that succeed, over a rolling 28 days."
  type        = number
  default     = 0.95
}

variable "slo_step_latency_goal" {
  description = "SLO: fraction of step requests served under slo_step_latency_seconds, over a rolling 28 days."
  type        = number
  default     = 0.99
}

variable "slo_step_latency_seconds" {
  description = "SLO: the step latency bound, in seconds."
  type        = number
  default     = 30
}

variable "labels" {
  description = "Labels added to every labelled resource."
  type        = map(string)
  default     = {}
}

variable "approval_request_subscriptions" {
  description = "Pull subscriptions on agex-approval-requests, one per notifier (a topic without a subscription drops approval requests)."
  type        = list(string)
  default     = ["agex-approval-requests-pull"]
}

variable "decision_sources" {
  description = "More decision sources than the api (chat bots that publish approval decisions themselves): name => Ed25519 public keys (PEM). The approvals function applies only decisions signed by a declared key; each bot keeps its private key and needs roles/pubsub.publisher on agex-approval-decisions."
  type        = map(list(string))
  default     = {}
}

variable "security_alert_subscribers" {
  description = "Members who may pull security.alert messages (guardrail verdicts other than allow, canary results) from the subscription agex-security-alerts-pull (roles/pubsub.subscriber on it), e.g. [\"group:security@example.com\", \"serviceAccount:siem@p.iam.gserviceaccount.com\"]. Named identities only."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for m in var.security_alert_subscribers : can(regex("^(user|group|serviceAccount|domain|principal|principalSet):.+", m))])
    error_message = "security_alert_subscribers must be named members (user:, group:, serviceAccount:, domain:, principal:, principalSet:); the public members are refused."
  }
}

variable "canary_image" {
  description = "Container image of the red-team canary jobs (canary.tf), e.g. REGION-docker.pkg.dev/PROJECT/agex/agex:TAG: it must have the agex command (the package installed), the agents' code, the fleet file at canary.fleet_file and the canary cases at canary.cases. Empty: no canary job, scheduler job or canary identity is created, whatever the fleet file enables."
  type        = string
  default     = ""
}

variable "canary" {
  description = "The canary jobs' settings: where the image keeps the fleet file (AGEX_FLEET_FILE) and the canary cases, and each execution's size and time limit. The schedule and the ceiling on attack success are per agent, in the fleet file."
  type = object({
    fleet_file      = optional(string, "/workspace/fleet.yaml")
    cases           = optional(string, "/workspace/guards/cases/canary.jsonl")
    memory          = optional(string, "1Gi")
    cpu             = optional(string, "1")
    timeout_seconds = optional(number, 1800)
  })
  default = {}

  validation {
    condition     = var.canary.timeout_seconds >= 60 && var.canary.timeout_seconds <= 86400
    error_message = "canary.timeout_seconds must be from 60 to 86400 (a Cloud Run job task's limit is 24 hours)."
  }
}

# --- the drift check (functions.tf, scheduler.tf, pubsub.tf): AGEX_DRIFT_* of the drift function ---------

variable "drift_schedule" {
  description = "Cron schedule (Etc/UTC) on which Cloud Scheduler calls the drift function: each call collects the metrics of runs that ended, tests each agent version for drift and publishes drift alerts."
  type        = string
  default     = "0 * * * *"
  nullable    = false

  validation {
    condition     = length(split(" ", var.drift_schedule)) == 5
    error_message = "drift_schedule must be a cron expression of five fields separated by single spaces, e.g. \"0 * * * *\"."
  }
}

variable "drift_interval_seconds" {
  description = "AGEX_DRIFT_INTERVAL_SECONDS: the time between two ticks of drift_schedule (the checks of a window split drift_alpha between them). Null: derived from drift_schedule (3600 for the default hourly schedule); a schedule whose ticks are not evenly spaced needs it set."
  type        = number
  default     = null

  validation {
    condition     = var.drift_interval_seconds == null || try(var.drift_interval_seconds >= 60 && floor(var.drift_interval_seconds) == var.drift_interval_seconds, false)
    error_message = "drift_interval_seconds must be a whole number of seconds, at least 60 (Cloud Scheduler ticks at most once a minute)."
  }
}

variable "drift_window_seconds" {
  description = "AGEX_DRIFT_WINDOW_SECONDS: the length of a drift window (consecutive windows, aligned on the epoch): the runs each check compares with their baseline are those of the window it is in, and an alert is raised at most once per window."
  type        = number
  default     = 86400
  nullable    = false

  validation {
    condition     = var.drift_window_seconds >= 60 && floor(var.drift_window_seconds) == var.drift_window_seconds
    error_message = "drift_window_seconds must be a whole number of seconds, at least 60."
  }
}

variable "drift_alpha" {
  description = "AGEX_DRIFT_ALPHA: the probability of a false alarm per agent version and window, across all its metrics and the window's checks."
  type        = number
  default     = 0.01
  nullable    = false

  validation {
    condition     = var.drift_alpha > 0 && var.drift_alpha < 1
    error_message = "drift_alpha must be between 0 and 1 (exclusive)."
  }
}

variable "drift_min_runs" {
  description = "AGEX_DRIFT_MIN_RUNS: the fewest runs of a version, in the window and in the baseline, for its metrics to be tested."
  type        = number
  default     = 30
  nullable    = false

  validation {
    condition     = var.drift_min_runs >= 5 && floor(var.drift_min_runs) == var.drift_min_runs
    error_message = "drift_min_runs must be a whole number, at least 5 (the drift function refuses fewer)."
  }
}

variable "drift_alert_subscribers" {
  description = "Members who may pull drift.alert messages from the subscription agex-drift-alerts-inspect (roles/pubsub.subscriber on it), e.g. [\"group:agents-oncall@example.com\", \"serviceAccount:notifier@p.iam.gserviceaccount.com\"]. Named identities only."
  type        = list(string)
  default     = []
  nullable    = false

  validation {
    condition     = alltrue([for m in var.drift_alert_subscribers : can(regex("^(user|group|serviceAccount|domain|principal|principalSet):.+", m))])
    error_message = "drift_alert_subscribers must be named members (user:, group:, serviceAccount:, domain:, principal:, principalSet:); the public members are refused."
  }
}

# --- budgets across runs (the fleet file's `budgets`; pubsub.tf, monitoring.tf) -----------------------------

variable "budget_alert_subscribers" {
  description = "Members who may pull budget.alert messages (a budget crossed 50%, 80% or 100%) from the subscription agex-budget-alerts-pull (roles/pubsub.subscriber on it), e.g. [\"group:finops@example.com\", \"serviceAccount:notifier@p.iam.gserviceaccount.com\"]. Named identities only."
  type        = list(string)
  default     = []
  nullable    = false

  validation {
    condition     = alltrue([for m in var.budget_alert_subscribers : can(regex("^(user|group|serviceAccount|domain|principal|principalSet):.+", m))])
    error_message = "budget_alert_subscribers must be named members (user:, group:, serviceAccount:, domain:, principal:, principalSet:); the public members are refused."
  }
}

# --- the runtime's OpenTelemetry metrics: alert thresholds (monitoring.tf) ----------------------------------

variable "model_error_rate_threshold" {
  description = "Alert when more than this fraction of a model's calls fail over 15 minutes (agex.model.calls, outcome=error)."
  type        = number
  default     = 0.05
  nullable    = false

  validation {
    condition     = var.model_error_rate_threshold > 0 && var.model_error_rate_threshold < 1
    error_message = "model_error_rate_threshold must be between 0 and 1 (exclusive)."
  }
}

variable "model_latency_threshold_seconds" {
  description = "Alert when the 95th percentile of a model's call latency stays above this many seconds for 10 minutes (agex.model.duration)."
  type        = number
  default     = 30
  nullable    = false

  validation {
    condition     = var.model_latency_threshold_seconds > 0
    error_message = "model_latency_threshold_seconds must be positive."
  }
}

variable "cost_burn_usd_per_hour" {
  description = "Alert when the estimated cost of all model calls over the last hour exceeds this many US dollars (agex.model.cost)."
  type        = number
  default     = 10
  nullable    = false

  validation {
    condition     = var.cost_burn_usd_per_hour > 0
    error_message = "cost_burn_usd_per_hour must be positive."
  }
}

# --- long-term memory (firestore.tf, functions.tf; docs/memory.md) -------------------------------------------

variable "memory_embeddings" {
  description = "AGEX_EMBEDDINGS of the api, step and approvals functions: how long-term memory turns text into vectors. \"local\" (all-MiniLM-L6-v2 on the instance's CPU, offline, 384 dimensions) or \"gemini:MODEL\" (e.g. gemini:gemini-embedding-001, through Vertex AI with the step function's identity, as the model). Changing it changes the vector space: memories stored before must be re-embedded."
  type        = string
  default     = "local"
  nullable    = false

  validation {
    condition     = can(regex("^(local|gemini:[A-Za-z0-9][A-Za-z0-9._/-]*)$", var.memory_embeddings))
    error_message = "memory_embeddings must be \"local\" or \"gemini:MODEL\", e.g. \"gemini:gemini-embedding-001\"."
  }
}

variable "memory_embedding_dimensions" {
  description = "The size of the vectors long-term memory stores: the dimension of the Firestore vector indexes on memories, and AGEX_EMBEDDING_DIMENSIONS (the outputDimensionality asked of Gemini). 384 with memory_embeddings = \"local\" (the local model's size: the plan refuses another); 768 is the usual size of Gemini's (memory_embeddings = \"gemini:MODEL\"). At most 2048, Firestore's limit. Changing it replaces the vector indexes."
  type        = number
  default     = 384
  nullable    = false

  validation {
    condition     = var.memory_embedding_dimensions >= 1 && var.memory_embedding_dimensions <= 2048 && floor(var.memory_embedding_dimensions) == var.memory_embedding_dimensions
    error_message = "memory_embedding_dimensions must be a whole number from 1 to 2048 (Firestore's largest vector index)."
  }
}
