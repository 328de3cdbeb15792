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
      timeout_seconds = optional(number, 60)
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

variable "drift_schedule" {
  description = "Cron schedule of the drift check (Cloud Scheduler publishes to agex-drift-alerts, which triggers the drift function)."
  type        = string
  default     = "0 * * * *"
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
