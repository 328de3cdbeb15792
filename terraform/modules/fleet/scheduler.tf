# Cloud Scheduler: the sweep (every minute) and the drift check.

# POST {step URL}/sweep with an OIDC token for tasks_invoker, the one identity the step function admits.
# The audience is AGEX_STEP_AUDIENCE (the step URL), which the step function checks in-process; the sweep
# re-enqueues runs that lost their task, repairs overdue timers and approval expiries, expires old runs.
resource "google_cloud_scheduler_job" "sweep" {
  project          = var.project
  region           = var.region
  name             = "agex-sweep"
  description      = "agex: re-enqueue runs that lost their step task, repair overdue timers and approval expiries"
  schedule         = "* * * * *" # every minute
  time_zone        = "Etc/UTC"
  attempt_deadline = "120s"

  # The next minute's sweep is the retry.
  retry_config {
    retry_count = 0
  }

  http_target {
    http_method = "POST"
    uri         = "${google_cloudfunctions2_function.step.service_config[0].uri}/sweep"

    oidc_token {
      service_account_email = google_service_account.tasks_invoker.email
      audience              = local.step_url
    }
  }

  depends_on = [google_project_service.apis]
}

# A tick on agex-drift-alerts, which triggers the drift function (functions.tf). Published by the Cloud
# Scheduler service agent, which holds pubsub.topics.publish through its own role.
resource "google_cloud_scheduler_job" "drift" {
  project     = var.project
  region      = var.region
  name        = "agex-drift"
  description = "agex: drift check of the fleet file against the deployment (the function is a stub for now)"
  schedule    = var.drift_schedule
  time_zone   = "Etc/UTC"

  pubsub_target {
    topic_name = google_pubsub_topic.drift_alerts.id
    data       = base64encode(jsonencode({ type = "drift.check", version = 1 }))
    attributes = {
      type    = "drift.check"
      version = "1"
    }
  }

  depends_on = [google_project_service.apis]
}
