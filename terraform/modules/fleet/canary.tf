# The red-team canary: for each agent whose fleet file entry enables it (`canary: {enabled: true}`, read by
# modules/canary_settings), a Cloud Run job agex-redteam-canary-{agent} that runs the agent against the
# canary cases with the live model and, when attacks succeed in a larger share of the attack cases than the
# agent's max_attack_success, fails and publishes a security alert to agex-security-alerts; and a Cloud
# Scheduler job that starts it on the agent's schedule. The functions are built from a source zip, not an image, so the job runs var.canary_image:
# while it is empty, no canary resource exists, whatever the fleet file says.
#
# Identities: agex-canary runs the job and may call Gemini on Vertex AI and publish security alerts, as
# the step function may, and nothing else: no Firestore, no Cloud Tasks, no secret, no agent identity.
# agex-canary-invoker is the identity of the scheduler's OAuth token and may only run the canary jobs.

locals {
  canaries  = { for agent, canary in module.canary_settings.enabled : agent => canary if var.canary_image != "" }
  canary_on = length(local.canaries) > 0

  # The functions' settings the canary needs (the same values, so that the two agree on project, region
  # and model backend), and no others: it has no queue, no API, no decisions to sign. Spans are not
  # exported (AGEX_TRACE_EXPORTER=none): the canary holds no Cloud Trace grant; its log lines carry the
  # trace ids.
  canary_env = merge(
    { for name in ["AGEX_PROJECT", "AGEX_LOCATION", "AGEX_VERTEX", "AGEX_LOG_LEVEL"] : name => local.function_env[name] },
    {
      AGEX_FLEET_FILE     = var.canary.fleet_file
      AGEX_TRACE_EXPORTER = "none"
    },
  )
}

module "canary_settings" {
  source = "../canary_settings"

  agents = var.agents
}

resource "google_service_account" "canary" {
  count = local.canary_on ? 1 : 0

  project      = var.project
  account_id   = "agex-canary"
  display_name = "agex red-team canary"
  description  = "Runtime identity of the agex red-team canary jobs: calls the model, publishes security alerts."

  depends_on = [google_project_service.apis]
}

resource "google_service_account" "canary_invoker" {
  count = local.canary_on ? 1 : 0

  project      = var.project
  account_id   = "agex-canary-invoker"
  display_name = "agex canary trigger"
  description  = "Identity of the OAuth token Cloud Scheduler runs the canary jobs with; may only run them."

  depends_on = [google_project_service.apis]
}

# The model access of the step function (Gemini on Vertex AI, AGEX_VERTEX=true), and only that.
resource "google_project_iam_member" "canary" {
  count = length(google_service_account.canary)

  project = var.project
  role    = "roles/aiplatform.user"
  member  = "serviceAccount:${google_service_account.canary[count.index].email}"
}

resource "google_pubsub_topic_iam_member" "canary_publishes_security_alerts" {
  count = length(google_service_account.canary)

  project = var.project
  topic   = google_pubsub_topic.security_alerts.name
  role    = "roles/pubsub.publisher"
  member  = "serviceAccount:${google_service_account.canary[count.index].email}"
}

resource "google_cloud_run_v2_job" "canary" {
  for_each = local.canaries

  project  = var.project
  name     = each.value.job
  location = var.region
  labels   = merge(local.labels, { agex-agent = each.key })

  # A canary holds no data: disabling it in the fleet file must delete the job, not fail the apply.
  deletion_protection = false

  template {
    task_count  = 1
    parallelism = 1

    template {
      service_account = google_service_account.canary[0].email
      timeout         = "${var.canary.timeout_seconds}s"
      # A failed canary is a finding (or an outage of the model), not a flake to retry at the price of
      # another model call per case step; the next scheduled run is the retry.
      max_retries = 0

      containers {
        image   = var.canary_image
        command = ["agex"]
        args = [
          "redteam", each.key,
          "--cases", var.canary.cases,
          "--model", "live",
          "--max-attack-success", tostring(each.value.max_attack_success),
          "--publish",
        ]

        resources {
          limits = {
            cpu    = var.canary.cpu
            memory = var.canary.memory
          }
        }

        dynamic "env" {
          for_each = local.canary_env
          content {
            name  = env.key
            value = env.value
          }
        }
      }
    }
  }

  # The fleet file's canary keys are checked first (main.tf): a bad one stops the plan with its own message.
  depends_on = [google_project_service.apis, terraform_data.fleet_checks]
}

# jobs.run needs run.jobs.run, which roles/run.invoker holds: granted on each canary job, to the invoker only.
resource "google_cloud_run_v2_job_iam_member" "canary_invoker" {
  for_each = local.canaries

  project  = var.project
  location = var.region
  name     = google_cloud_run_v2_job.canary[each.key].name
  role     = "roles/run.invoker"
  member   = "serviceAccount:${google_service_account.canary_invoker[0].email}"
}

# Starts one execution of the agent's canary job through the Cloud Run Admin API (jobs.run), with an OAuth
# access token of agex-canary-invoker (Cloud Scheduler's service agent mints it through its own role).
# jobs.run returns as soon as the execution is created, so the attempt deadline is short; no retry, as a
# retried request that had in fact gone through would start a second execution.
resource "google_cloud_scheduler_job" "canary" {
  for_each = local.canaries

  project          = var.project
  region           = var.region
  name             = each.value.job
  description      = "agex: red-team canary of agent ${each.key} (runs the Cloud Run job ${each.value.job})"
  schedule         = each.value.schedule
  time_zone        = "Etc/UTC"
  attempt_deadline = "60s"

  retry_config {
    retry_count = 0
  }

  http_target {
    http_method = "POST"
    uri         = "https://run.googleapis.com/v2/projects/${var.project}/locations/${var.region}/jobs/${google_cloud_run_v2_job.canary[each.key].name}:run"

    oauth_token {
      service_account_email = google_service_account.canary_invoker[0].email
      scope                 = "https://www.googleapis.com/auth/cloud-platform"
    }
  }

  depends_on = [google_project_service.apis, google_cloud_run_v2_job_iam_member.canary_invoker]
}
