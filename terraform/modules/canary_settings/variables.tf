variable "agents" {
  description = "The `agents` map of the fleet file (yamldecode of it)."
  type        = any
}

variable "default_schedule" {
  description = "Cron schedule (Etc/UTC) of a canary whose agent sets none: daily."
  type        = string
  default     = "0 6 * * *"
}

variable "default_max_attack_success" {
  description = "Share of the attack cases that may succeed before the canary fails, for an agent that sets none: none may."
  type        = number
  default     = 0
}
