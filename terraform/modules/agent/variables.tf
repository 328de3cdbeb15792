variable "name" {
  description = "The agent's name, as in its code and the fleet file. Its queue is agex-steps-{name}."
  type        = string

  validation {
    condition     = can(regex("^[A-Za-z0-9-]{1,89}$", var.name))
    error_message = "The agent name must be letters, digits and hyphens (it names the Cloud Tasks queue agex-steps-{name})."
  }
}

variable "identity" {
  description = "The agent's service account id (the fleet file's identity), e.g. agent-support."
  type        = string

  validation {
    condition     = can(regex("^[a-z]([-a-z0-9]{4,28}[a-z0-9])$", var.identity))
    error_message = "identity must be a service account id (6-30 characters: lowercase letters, digits, hyphens), not an email: Terraform creates the account in this project."
  }
}

variable "secrets" {
  description = "Secret Manager secret ids this agent alone may read. Terraform creates the secrets (no values) and grants the agent's identity secretAccessor on each; values are added out of band (gcloud secrets versions add)."
  type        = list(string)
  default     = []
}

variable "queue" {
  description = "The agent's Cloud Tasks queue settings (the fleet file's queue)."
  type = object({
    max_dispatches_per_second = optional(number, 50)
    max_concurrent_dispatches = optional(number, 100)
    max_attempts              = optional(number, 100)
  })
  default = {}
}

variable "step_service_account_email" {
  description = "The step function's identity: granted roles/iam.serviceAccountTokenCreator on this agent's identity, to read its secrets as it."
  type        = string
}

variable "tasks_invoker_email" {
  description = "The identity Cloud Tasks signs step tasks as: the queue enforces it for every task (queue-level OIDC override)."
  type        = string
}

variable "step_audience" {
  description = "Audience of the step tasks' OIDC tokens (AGEX_STEP_AUDIENCE). Null: no queue-level OIDC override (each task carries the token the runtime asks for)."
  type        = string
  default     = null
}

variable "project" {
  description = "Google Cloud project id."
  type        = string
}

variable "region" {
  description = "Region of the queue (AGEX_LOCATION)."
  type        = string
}

variable "labels" {
  description = "Labels added to the secrets."
  type        = map(string)
  default     = {}
}
