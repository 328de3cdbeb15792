# Monitoring: log-based metrics from the step function's log entries, two alert policies and two SLOs on
# them; the runtime's OpenTelemetry metrics, a dashboard and alert policies on them, on drift alerts and on
# budgets reached.

locals {
  step_logs = "resource.type=\"cloud_run_revision\" AND resource.labels.service_name=\"${local.names.step}\""
}

# Step latency: the latency of each request Cloud Run served to the step function (its request log
# entries), steps and approval expiries, not the sweep. A step's latency is dominated by its model call
# and tools.
resource "google_logging_metric" "step_latency" {
  project     = var.project
  name        = "agex_step_latency"
  description = "Latency of the step function's requests (one step of one run, or an approval expiry), from its request log."
  filter      = "${local.step_logs} AND log_id(\"run.googleapis.com/requests\") AND httpRequest.requestMethod=\"POST\" AND NOT httpRequest.requestUrl:\"/sweep\""

  metric_descriptor {
    metric_kind  = "DELTA"
    value_type   = "DISTRIBUTION"
    unit         = "s"
    display_name = "agex step latency"
  }

  value_extractor = "REGEXP_EXTRACT(httpRequest.latency, \"([0-9.]+)s\")"

  # 10 ms to ~5.8 h in doublings.
  bucket_options {
    exponential_buckets {
      num_finite_buckets = 21
      growth_factor      = 2
      scale              = 0.01
    }
  }

  depends_on = [google_project_service.apis]
}

# Every finished run: the step function logs outcome="finished" with the run's status
# (agex.engine.stepper, "run {status}").
resource "google_logging_metric" "runs_finished" {
  project     = var.project
  name        = "agex_runs_finished"
  description = "Runs that finished (succeeded, failed, expired, ...), by status."
  filter      = "${local.step_logs} AND jsonPayload.outcome=\"finished\""

  metric_descriptor {
    metric_kind  = "DELTA"
    value_type   = "INT64"
    unit         = "1"
    display_name = "agex runs finished"

    labels {
      key         = "status"
      value_type  = "STRING"
      description = "The run's final status."
    }
    labels {
      key         = "agent"
      value_type  = "STRING"
      description = "The agent that ran."
    }
  }

  label_extractors = {
    status = "EXTRACT(jsonPayload.status)"
    agent  = "EXTRACT(labels.agent)" # the run labels the runtime logs (logging.googleapis.com/labels)
  }

  depends_on = [google_project_service.apis]
}

# Failed runs: outcome="finished" with status failed.
resource "google_logging_metric" "run_failures" {
  project     = var.project
  name        = "agex_run_failures"
  description = "Runs that finished as failed (limits, model or tool errors, approval_expired with on_expiry=fail, ...)."
  filter      = "${local.step_logs} AND jsonPayload.outcome=\"finished\" AND jsonPayload.status=\"failed\""

  metric_descriptor {
    metric_kind  = "DELTA"
    value_type   = "INT64"
    unit         = "1"
    display_name = "agex run failures"
  }

  depends_on = [google_project_service.apis]
}

resource "google_monitoring_alert_policy" "run_failure_rate" {
  project               = var.project
  display_name          = "agex: run failure rate"
  combiner              = "OR"
  notification_channels = var.alert_channels
  user_labels           = local.labels

  conditions {
    display_name = "failed runs / finished runs over 15 min > ${var.run_failure_rate_threshold}"

    condition_threshold {
      filter             = "metric.type=\"logging.googleapis.com/user/${google_logging_metric.run_failures.name}\" AND resource.type=\"cloud_run_revision\""
      denominator_filter = "metric.type=\"logging.googleapis.com/user/${google_logging_metric.runs_finished.name}\" AND resource.type=\"cloud_run_revision\""
      comparison         = "COMPARISON_GT"
      threshold_value    = var.run_failure_rate_threshold
      duration           = "0s"

      aggregations {
        alignment_period     = "900s"
        per_series_aligner   = "ALIGN_DELTA"
        cross_series_reducer = "REDUCE_SUM"
      }
      denominator_aggregations {
        alignment_period     = "900s"
        per_series_aligner   = "ALIGN_DELTA"
        cross_series_reducer = "REDUCE_SUM"
      }

      trigger {
        count = 1
      }
    }
  }

  alert_strategy {
    auto_close = "86400s"
  }

  documentation {
    mime_type = "text/markdown"
    content   = "More than ${format("%.0f", var.run_failure_rate_threshold * 100)}% of the runs that finished in the last 15 minutes failed. Find them in Cloud Logging with `resource.labels.service_name=\"${local.names.step}\" jsonPayload.outcome=\"finished\" jsonPayload.status=\"failed\"`; `agex status RUN_ID` names the error (limit, model, tool, secret_access_denied, ...)."
  }
}

resource "google_monitoring_alert_policy" "step_latency" {
  project               = var.project
  display_name          = "agex: step latency"
  combiner              = "OR"
  notification_channels = var.alert_channels
  user_labels           = local.labels

  conditions {
    display_name = "p95 step latency over 10 min > ${var.step_latency_threshold_seconds} s"

    condition_threshold {
      filter          = "metric.type=\"logging.googleapis.com/user/${google_logging_metric.step_latency.name}\" AND resource.type=\"cloud_run_revision\""
      comparison      = "COMPARISON_GT"
      threshold_value = var.step_latency_threshold_seconds
      duration        = "600s"

      aggregations {
        alignment_period     = "300s"
        per_series_aligner   = "ALIGN_PERCENTILE_95"
        cross_series_reducer = "REDUCE_MAX"
      }

      trigger {
        count = 1
      }
    }
  }

  alert_strategy {
    auto_close = "86400s"
  }

  documentation {
    mime_type = "text/markdown"
    content   = "The step function's 95th percentile latency has been above ${var.step_latency_threshold_seconds} s for 10 minutes. Usually the model (Vertex AI latency or quota) or a slow tool; a step cut off by the function timeout is taken over once its lease (AGEX_STEP_LEASE_SECONDS, 60 s) expires, and its uncertain calls are reconciled. Open a slow request's trace in Cloud Trace."
  }
}

# The SLOs hang off a custom service, since the functions' own Cloud Run services are not auto-detected
# with these log-based metrics.
resource "google_monitoring_custom_service" "agex" {
  project      = var.project
  service_id   = "agex"
  display_name = "agex runtime"

  depends_on = [google_project_service.apis]
}

# Runs succeed: of the runs that finish, the fraction that succeed.
resource "google_monitoring_slo" "run_success" {
  project             = var.project
  service             = google_monitoring_custom_service.agex.service_id
  slo_id              = "agex-run-success"
  display_name        = "agex: finished runs succeed (28 days)"
  goal                = var.slo_run_success_goal
  rolling_period_days = 28

  request_based_sli {
    good_total_ratio {
      good_service_filter  = "metric.type=\"logging.googleapis.com/user/${google_logging_metric.runs_finished.name}\" resource.type=\"cloud_run_revision\" metric.labels.status=\"succeeded\""
      total_service_filter = "metric.type=\"logging.googleapis.com/user/${google_logging_metric.runs_finished.name}\" resource.type=\"cloud_run_revision\""
    }
  }
}

# Steps are fast: the fraction of step requests served under var.slo_step_latency_seconds.
resource "google_monitoring_slo" "step_latency" {
  project             = var.project
  service             = google_monitoring_custom_service.agex.service_id
  slo_id              = "agex-step-latency"
  display_name        = "agex: steps under ${var.slo_step_latency_seconds} s (28 days)"
  goal                = var.slo_step_latency_goal
  rolling_period_days = 28

  request_based_sli {
    distribution_cut {
      distribution_filter = "metric.type=\"logging.googleapis.com/user/${google_logging_metric.step_latency.name}\" resource.type=\"cloud_run_revision\""

      range {
        min = 0
        max = var.slo_step_latency_seconds
      }
    }
  }
}

# --- the runtime's OpenTelemetry metrics (agex.obs.metrics) ---------------------------------------------
# With AGEX_METRICS_EXPORTER=gcp each function instance writes workload.googleapis.com/agex.* on a
# generic_task resource (job = the function, task = the instance). Counters and histograms are cumulative;
# their attributes are agent, agent_version, model, tool, outcome (and type for tokens), never run ids.

locals {
  otel_metric_names = [
    "agex.step.duration", "agex.steps", "agex.model.duration", "agex.model.calls", "agex.model.tokens",
    "agex.model.cost", "agex.tool.duration", "agex.degradations",
  ]
  otel_metric = {
    for name in local.otel_metric_names : name => "resource.type=\"generic_task\" AND metric.type=\"workload.googleapis.com/${name}\""
  }
}

resource "google_monitoring_dashboard" "agex" {
  project = var.project
  dashboard_json = templatefile("${path.module}/dashboard.json.tftpl", {
    display_name         = "agex runtime"
    runs_finished_metric = google_logging_metric.runs_finished.name
    drift_alerts_topic   = google_pubsub_topic.drift_alerts.name
  })

  depends_on = [google_project_service.apis]
}

# Model errors: failed calls / all calls, per model, over 15 min.
resource "google_monitoring_alert_policy" "model_error_rate" {
  project               = var.project
  display_name          = "agex: model error rate"
  combiner              = "OR"
  notification_channels = var.alert_channels
  user_labels           = local.labels

  conditions {
    display_name = "failed model calls / model calls over 15 min > ${var.model_error_rate_threshold}"

    condition_threshold {
      filter             = "${local.otel_metric["agex.model.calls"]} AND metric.label.\"outcome\"=\"error\""
      denominator_filter = local.otel_metric["agex.model.calls"]
      comparison         = "COMPARISON_GT"
      threshold_value    = var.model_error_rate_threshold
      duration           = "0s"

      aggregations {
        alignment_period     = "900s"
        per_series_aligner   = "ALIGN_DELTA"
        cross_series_reducer = "REDUCE_SUM"
        group_by_fields      = ["metric.label.\"model\""]
      }
      denominator_aggregations {
        alignment_period     = "900s"
        per_series_aligner   = "ALIGN_DELTA"
        cross_series_reducer = "REDUCE_SUM"
        group_by_fields      = ["metric.label.\"model\""]
      }

      trigger {
        count = 1
      }
    }
  }

  alert_strategy {
    auto_close = "86400s"
  }

  documentation {
    mime_type = "text/markdown"
    content   = "More than ${format("%.0f", var.model_error_rate_threshold * 100)}% of the calls to a model failed in the last 15 minutes (quota, outage, refused requests). Each failed call failed its run with error code model_error: find them in Cloud Trace (spans `chat MODEL` with `error.type`) or in Cloud Logging with `resource.labels.service_name=\"${local.names.step}\" jsonPayload.status=\"failed\"`."
  }
}

# Model latency: p95 of the model calls, per model, for 10 min.
resource "google_monitoring_alert_policy" "model_latency" {
  project               = var.project
  display_name          = "agex: model latency"
  combiner              = "OR"
  notification_channels = var.alert_channels
  user_labels           = local.labels

  conditions {
    display_name = "p95 model call latency over 10 min > ${var.model_latency_threshold_seconds} s"

    condition_threshold {
      filter          = local.otel_metric["agex.model.duration"]
      comparison      = "COMPARISON_GT"
      threshold_value = var.model_latency_threshold_seconds
      duration        = "600s"

      aggregations {
        alignment_period     = "300s"
        per_series_aligner   = "ALIGN_DELTA"
        cross_series_reducer = "REDUCE_PERCENTILE_95"
        group_by_fields      = ["metric.label.\"model\""]
      }

      trigger {
        count = 1
      }
    }
  }

  alert_strategy {
    auto_close = "86400s"
  }

  documentation {
    mime_type = "text/markdown"
    content   = "The 95th percentile of a model's call latency has been above ${var.model_latency_threshold_seconds} s for 10 minutes. Steps wait on it: expect the step latency alert to follow. Check the model's quota and status; the dashboard \"agex runtime\" shows latency per model and agent."
  }
}

# Spend: the estimated cost of all model calls over the last hour.
resource "google_monitoring_alert_policy" "cost_burn_rate" {
  project               = var.project
  display_name          = "agex: model spend"
  combiner              = "OR"
  notification_channels = var.alert_channels
  user_labels           = local.labels

  conditions {
    display_name = "estimated model cost over 1 h > ${var.cost_burn_usd_per_hour} USD"

    condition_threshold {
      filter          = local.otel_metric["agex.model.cost"]
      comparison      = "COMPARISON_GT"
      threshold_value = var.cost_burn_usd_per_hour
      duration        = "0s"

      aggregations {
        alignment_period     = "3600s"
        per_series_aligner   = "ALIGN_DELTA"
        cross_series_reducer = "REDUCE_SUM"
      }

      trigger {
        count = 1
      }
    }
  }

  alert_strategy {
    auto_close = "86400s"
  }

  documentation {
    mime_type = "text/markdown"
    content   = "The model calls of the last hour cost more than ${var.cost_burn_usd_per_hour} USD (the runtime's estimate from its price table). The dashboard \"agex runtime\" splits the spend by agent and version; each run's usage and cost are in its metrics record and `agex status RUN_ID`."
  }
}

# Drift: the drift function published at least one drift.alert (agex.core.metrics.DRIFT_ALERTS_TOPIC), or an
# agent's SLO degraded or recovered it (slo.degraded, slo.recovered, on the same topic).
resource "google_monitoring_alert_policy" "drift_alerts" {
  project               = var.project
  display_name          = "agex: behaviour drift"
  combiner              = "OR"
  notification_channels = var.alert_channels
  user_labels           = local.labels

  conditions {
    display_name = "drift.alert messages published on ${google_pubsub_topic.drift_alerts.name}"

    condition_threshold {
      filter          = "resource.type=\"pubsub_topic\" AND resource.label.\"topic_id\"=\"${google_pubsub_topic.drift_alerts.name}\" AND metric.type=\"pubsub.googleapis.com/topic/send_message_operation_count\""
      comparison      = "COMPARISON_GT"
      threshold_value = 0
      duration        = "0s"

      aggregations {
        alignment_period     = "300s"
        per_series_aligner   = "ALIGN_DELTA"
        cross_series_reducer = "REDUCE_SUM"
      }

      trigger {
        count = 1
      }
    }
  }

  alert_strategy {
    auto_close = "86400s"
  }

  documentation {
    mime_type = "text/markdown"
    content   = "A behavioural metric of an agent version moved away from its baseline, or an agent missing its SLO was degraded or recovered: the drift function published a drift.alert, slo.degraded or slo.recovered message on ${google_pubsub_topic.drift_alerts.name} (its type attribute says which). The message says which metric, the test, both sides and example runs, or the burn rates and the degradation: read it from a subscription of the topic; docs/observability.md says what each metric means, docs/slo.md what a degradation does."
  }
}

# --- budgets across runs (agex.engine.budgets) ----------------------------------------------------------------
# A budget's alerts go to agex-budget-alerts at 50%, 80% and 100% (pubsub.tf), but Pub/Sub's metrics do not
# see message attributes: the 100% alert is counted from the log entry its sender writes with it
# (budget_event="alert", threshold 1.0), once per budget, member and window period across every instance.

locals {
  budget_logs = "resource.type=\"cloud_run_revision\" AND resource.labels.service_name=(\"${local.names.api}\" OR \"${local.names.step}\")"
}

resource "google_logging_metric" "budgets_reached" {
  project     = var.project
  name        = "agex_budgets_reached"
  description = "Members of a budget's scope (a user, an agent, a tenant, the deployment) that reached 100% of it in a window period, from the api's and the step function's budget.alert log entries."
  filter      = "${local.budget_logs} AND jsonPayload.budget_event=\"alert\" AND jsonPayload.threshold>=1"

  metric_descriptor {
    metric_kind  = "DELTA"
    value_type   = "INT64"
    unit         = "1"
    display_name = "agex budgets reached"

    labels {
      key         = "budget"
      value_type  = "STRING"
      description = "The budget's name, as in the fleet file."
    }
  }

  label_extractors = {
    budget = "EXTRACT(jsonPayload.budget)"
  }

  depends_on = [google_project_service.apis]
}

# Budgets: a member reached 100% of a budget, whose action now applies. One incident per budget.
resource "google_monitoring_alert_policy" "budgets_reached" {
  project               = var.project
  display_name          = "agex: budget reached"
  combiner              = "OR"
  notification_channels = var.alert_channels
  user_labels           = local.labels

  conditions {
    display_name = "members of a budget's scope reaching 100% of it (budget.alert at threshold 1.0)"

    condition_threshold {
      filter          = "metric.type=\"logging.googleapis.com/user/${google_logging_metric.budgets_reached.name}\" AND resource.type=\"cloud_run_revision\""
      comparison      = "COMPARISON_GT"
      threshold_value = 0
      duration        = "0s"

      aggregations {
        alignment_period     = "300s"
        per_series_aligner   = "ALIGN_DELTA"
        cross_series_reducer = "REDUCE_SUM"
        group_by_fields      = ["metric.label.\"budget\""]
      }

      trigger {
        count = 1
      }
    }
  }

  alert_strategy {
    auto_close = "86400s"
  }

  documentation {
    mime_type = "text/markdown"
    content   = "A user, agent, tenant or the whole deployment reached 100% of a budget of the fleet file, and its action applies until enough of the window's spend ages out: refuse (new runs answer 429 with Retry-After, running ones stop at their next model call), degrade (their steps use the budget's cheaper model, window or tools), or alert (nothing more). The budget.alert message on ${google_pubsub_topic.budget_alerts.name} names the member, the spend and the cap: pull it from ${google_pubsub_subscription.budget_alerts.name}, or find it in Cloud Logging with `jsonPayload.budget_event=\"alert\"`. Raise the cap in the fleet file's budgets if the spend is expected (docs/budgets.md)."
  }
}
