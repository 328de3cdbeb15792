# Cloud Scheduler: the sweep (every minute), the drift check (var.drift_schedule, hourly by default) and the
# fleet file's schedules (one job each).

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

# POST {drift URL}/ with an OIDC token for the drift invoker (google_service_account.scheduler), the one
# identity the drift function admits. The audience is AGEX_DRIFT_AUDIENCE (the drift function's
# deterministic URL), which the function checks in-process, as the step function does for the sweep. Each
# check collects the metrics of runs that ended, tests each agent version against its baseline and
# publishes drift.alert messages on agex-drift-alerts.
resource "google_cloud_scheduler_job" "drift" {
  project          = var.project
  region           = var.region
  name             = "agex-drift"
  description      = "agex: drift check: collect ended runs' metrics, test them for drift, publish drift alerts"
  schedule         = var.drift_schedule
  time_zone        = "Etc/UTC"
  attempt_deadline = "${min(1800, var.functions.drift.timeout_seconds)}s" # the most an HTTP target allows

  # The next tick is the retry: the drift tests split alpha across the window's scheduled checks
  # (AGEX_DRIFT_INTERVAL_SECONDS), and a retried check would be one look more than they allow for.
  retry_config {
    retry_count = 0
  }

  http_target {
    http_method = "POST"
    uri         = "${google_cloudfunctions2_function.drift.service_config[0].uri}/"

    oidc_token {
      service_account_email = google_service_account.scheduler.email
      audience              = local.drift_url
    }
  }

  # The invoker may call the function before the first tick.
  depends_on = [google_project_service.apis, google_cloud_run_service_iam_member.drift_invoker]
}

# AGEX_DRIFT_INTERVAL_SECONDS: how far apart two drift checks are. Derived from drift_schedule for the
# schedules whose ticks are evenly spaced (every N minutes or hours dividing the hour or the day, once an
# hour, once a day); any other schedule needs var.drift_interval_seconds (checked on the drift function).
locals {
  drift_every_minutes = try(tonumber(regex("^\\*/([0-9]+) \\* \\* \\* \\*$", var.drift_schedule)[0]), null)
  drift_every_hours   = try(tonumber(regex("^[0-9]+ \\*/([0-9]+) \\* \\* \\*$", var.drift_schedule)[0]), null)
  drift_schedule_seconds = (
    var.drift_schedule == "* * * * *" ? 60 :
    can(regex("^[0-9]+ \\* \\* \\* \\*$", var.drift_schedule)) ? 3600 :
    can(regex("^[0-9]+ [0-9]+ \\* \\* \\*$", var.drift_schedule)) ? 86400 :
    try(local.drift_every_minutes > 0 && 60 % local.drift_every_minutes == 0, false) ? 60 * local.drift_every_minutes :
    try(local.drift_every_hours > 0 && 24 % local.drift_every_hours == 0, false) ? 3600 * local.drift_every_hours :
    null
  )
  drift_interval_seconds = var.drift_interval_seconds != null ? var.drift_interval_seconds : local.drift_schedule_seconds
}

# The fleet file's schedules (docs/schedules.md): POST {step URL}/schedules/{name}:fire with the same OIDC
# identity and audience as the sweep. Cloud Scheduler sends X-CloudScheduler-ScheduleTime, from which the step
# function keys the run: a firing delivered twice (a retry after a lost answer) starts one run. Pausing is the
# API's (POST /v1/schedules/{name}:pause), so the job keeps firing and a paused schedule skips its firings.
resource "google_cloud_scheduler_job" "schedule" {
  for_each = { for s in var.schedules : s.name => s }

  project          = var.project
  region           = var.region
  name             = "agex-schedule-${each.key}"
  description      = "agex: run agent ${each.value.agent} on its schedule ${each.key}"
  schedule         = each.value.cron
  time_zone        = try(each.value.time_zone, "Etc/UTC")
  attempt_deadline = "60s"

  retry_config {
    retry_count          = 3
    min_backoff_duration = "10s"
    max_backoff_duration = "60s"
  }

  http_target {
    http_method = "POST"
    uri         = "${google_cloudfunctions2_function.step.service_config[0].uri}/schedules/${each.key}:fire"

    oidc_token {
      service_account_email = google_service_account.tasks_invoker.email
      audience              = local.step_url
    }
  }

  depends_on = [google_project_service.apis]
}
