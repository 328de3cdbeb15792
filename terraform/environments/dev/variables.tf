variable "project" {
  description = "Google Cloud project id of this environment."
  type        = string
}

variable "region" {
  description = "Region of the functions, queues, scheduler jobs and Vertex AI calls."
  type        = string
}

variable "fleet_file" {
  description = "The fleet file (agents, identities, secrets, queue settings), relative to this directory."
  type        = string
  default     = "../../../examples/fleet.yaml"
}

variable "agent_packages" {
  description = "Repository directories holding the agents' code (shipped in the function source)."
  type        = list(string)
  default     = ["examples"]
}

variable "firestore_location" {
  description = "Firestore location; null: the region. Cannot change after creation."
  type        = string
  default     = null
}

variable "firestore_delete_protection" {
  description = "Refuse to delete the Firestore database."
  type        = bool
  default     = true
}

variable "source_object" {
  description = "A prebuilt source zip in the source bucket (e.g. from Cloud Build); null: Terraform zips the repository."
  type        = string
  default     = null
}

variable "api_invokers" {
  description = "Members allowed to invoke the api function, e.g. group:agex-users@example.com."
  type        = list(string)
  default     = []
}

variable "tenants" {
  description = "AGEX_TENANTS: email-pattern=tenant pairs, comma-separated."
  type        = string
}

variable "api_audience" {
  description = "AGEX_API_AUDIENCE; null: the api function's deterministic URL."
  type        = string
  default     = null
}

variable "public_url" {
  description = "AGEX_PUBLIC_URL; null: the api function's URL."
  type        = string
  default     = null
}

variable "functions" {
  description = "Sizing and instance limits per function (see modules/fleet/variables.tf for the defaults)."
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
}

variable "alert_channels" {
  description = "Monitoring notification channel ids for the alert policies."
  type        = list(string)
  default     = []
}

variable "labels" {
  description = "Labels added to every labelled resource."
  type        = map(string)
  default     = {}
}

variable "security_alert_subscribers" {
  description = "Members who may pull security alerts from agex-security-alerts-pull, e.g. group:security@example.com."
  type        = list(string)
  default     = []
}

variable "canary_image" {
  description = "Image of the red-team canary jobs (the agex command, the agents' code, the fleet file, the canary cases); empty: no canary (docs/deploy.md)."
  type        = string
  default     = ""
}

variable "drift" {
  description = "The drift check's settings (modules/fleet/variables.tf: drift_*); each one left out keeps the module's default: hourly, a window of a day, alpha 0.01, at least 30 runs."
  type = object({
    schedule         = optional(string)
    interval_seconds = optional(number)
    window_seconds   = optional(number)
    alpha            = optional(number)
    min_runs         = optional(number)
  })
  default = {}
}

variable "drift_alert_subscribers" {
  description = "Members who may pull drift alerts from agex-drift-alerts-inspect, e.g. group:agents-oncall@example.com."
  type        = list(string)
  default     = []
}

variable "budget_alert_subscribers" {
  description = "Members who may pull budget alerts (a budget of the fleet file crossed 50%, 80% or 100%) from agex-budget-alerts-pull, e.g. group:finops@example.com."
  type        = list(string)
  default     = []
}

variable "console_iap" {
  description = "The console behind Identity-Aware Proxy: its domain, the members IAP lets through, and (second apply) the audience of IAP's header (docs/console.md). null: none."
  type = object({
    domain   = string
    members  = list(string)
    audience = optional(string, "")
  })
  default = null
}

variable "memory_embeddings" {
  description = "How long-term memory embeds texts: \"local\" or \"gemini:MODEL\" (modules/fleet/variables.tf). null: the module's default, local."
  type        = string
  default     = null
}

variable "memory_embedding_dimensions" {
  description = "The size of memory's vectors, the Firestore vector indexes' dimension (modules/fleet/variables.tf): 384 with local embeddings, 768 usually with Gemini's. null: the module's default, 384."
  type        = number
  default     = null
}
