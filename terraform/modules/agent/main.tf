# One agent of the fleet: its own identity, its own step queue, its own secrets (readable by that identity
# alone), and the step function's right to act as it. The step function is shared by every agent: for a
# tool call it reads the tool's secrets by impersonating the agent's service account (agex.adapters.gcp.secret_manager),
# so what an agent can read is what its identity is granted here, and nothing another agent is granted.

locals {
  labels = merge(var.labels, { app = "agex", agex-agent = lower(var.name) })
}

# The agent's identity (the fleet file's identity). Holds nothing but secretAccessor on its own secrets.
resource "google_service_account" "agent" {
  project      = var.project
  account_id   = var.identity
  display_name = "agex agent ${var.name}"
  description  = "Identity of the agex agent ${var.name}: reads its own tool secrets, nothing else."
}

# The agent's step queue: its own rate limits, so one busy agent cannot starve another. The runtime sends
# the agent's tasks to {AGEX_QUEUE}-{agent} (AGEX_PER_AGENT_QUEUES=true).
resource "google_cloud_tasks_queue" "steps" {
  project  = var.project
  location = var.region
  name     = "agex-steps-${var.name}"

  rate_limits {
    max_dispatches_per_second = var.queue.max_dispatches_per_second
    max_concurrent_dispatches = var.queue.max_concurrent_dispatches
  }

  retry_config {
    max_attempts  = var.queue.max_attempts
    min_backoff   = "1s"
    max_backoff   = "300s"
    max_doublings = 8
  }

  # Whatever a task asks for, Cloud Tasks signs its OIDC token as the tasks invoker, for the step audience:
  # the one identity the step function admits.
  dynamic "http_target" {
    for_each = var.step_audience == null ? [] : [var.step_audience]
    content {
      oidc_token {
        service_account_email = var.tasks_invoker_email
        audience              = http_target.value
      }
    }
  }
}

# The agent's secrets: containers only. Values are never in Terraform (nor in its state): add them with
# `gcloud secrets versions add SECRET --data-file=-` (docs/deploy.md). A secret id belongs to this agent
# alone; the fleet module refuses a fleet file where two agents list the same id.
resource "google_secret_manager_secret" "secret" {
  for_each = toset(var.secrets)

  project   = var.project
  secret_id = each.key
  labels    = local.labels

  replication {
    auto {}
  }
}

# Only the agent's own identity may read each of its secrets.
resource "google_secret_manager_secret_iam_member" "accessor" {
  for_each = toset(var.secrets)

  project   = var.project
  secret_id = google_secret_manager_secret.secret[each.key].secret_id
  role      = "roles/secretmanager.secretAccessor"
  member    = "serviceAccount:${google_service_account.agent.email}"
}

# The shared step function acts as this agent to read its secrets (short-lived impersonated credentials).
resource "google_service_account_iam_member" "step_impersonates" {
  service_account_id = google_service_account.agent.name
  role               = "roles/iam.serviceAccountTokenCreator"
  member             = "serviceAccount:${var.step_service_account_email}"
}
