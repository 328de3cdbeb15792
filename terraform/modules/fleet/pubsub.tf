# Pub/Sub: the topics of docs/approvals.md and docs/architecture.md, the push subscription that delivers
# decisions to the approvals function, and pull subscriptions so that no topic drops what it receives.

resource "google_pubsub_topic" "run_events" {
  project                    = var.project
  name                       = "agex-run-events"
  labels                     = local.labels
  message_retention_duration = "604800s"

  depends_on = [google_project_service.apis]
}

resource "google_pubsub_topic" "approval_requests" {
  project                    = var.project
  name                       = "agex-approval-requests"
  labels                     = local.labels
  message_retention_duration = "604800s"

  depends_on = [google_project_service.apis]
}

resource "google_pubsub_topic" "approval_decisions" {
  project                    = var.project
  name                       = "agex-approval-decisions"
  labels                     = local.labels
  message_retention_duration = "604800s"

  depends_on = [google_project_service.apis]
}

resource "google_pubsub_topic" "approval_decisions_dead" {
  project                    = var.project
  name                       = "agex-approval-decisions-dead"
  labels                     = local.labels
  message_retention_duration = "604800s"

  depends_on = [google_project_service.apis]
}

# security.alert v1 (agex.core.guard.SECURITY_ALERTS_TOPIC): every guardrail verdict other than allow, once
# per recording, and every red-team canary result (canary.tf). Published by the step function, the api and
# the canary; read by whoever watches for attacks, from the pull subscription below.
resource "google_pubsub_topic" "security_alerts" {
  project                    = var.project
  name                       = "agex-security-alerts"
  labels                     = local.labels
  message_retention_duration = "604800s"

  depends_on = [google_project_service.apis]
}

# drift.alert v1 (agex.core.metrics.DRIFT_ALERTS_TOPIC): a behavioural metric of an agent version moved
# away from its baseline. Published by the drift function alone, once per alert; read by notifiers and
# `agex alerts` from the pull subscription below.
resource "google_pubsub_topic" "drift_alerts" {
  project                    = var.project
  name                       = "agex-drift-alerts"
  labels                     = local.labels
  message_retention_duration = "604800s"

  depends_on = [google_project_service.apis]
}

# budget.alert v1 (agex.core.spend.BUDGET_ALERTS_TOPIC): a member of a budget's scope (a user, an agent, a
# tenant, the deployment) crossed 50%, 80% or 100% of it, once each per window period across every
# instance. Published by the api (when a run starts) and the step function (at each model call); read by
# whoever owns the spend, from the pull subscription below.
resource "google_pubsub_topic" "budget_alerts" {
  project                    = var.project
  name                       = "agex-budget-alerts"
  labels                     = local.labels
  message_retention_duration = "604800s"

  depends_on = [google_project_service.apis]
}

# Decisions -> approvals function. Pub/Sub signs each push with an OIDC token for the push identity, the
# only member allowed to invoke the approvals function. A message refused 5 times (a malformed decision:
# HTTP 400; an outage: 503) moves to the dead-letter topic.
resource "google_pubsub_subscription" "approvals_push" {
  project = var.project
  name    = "agex-approvals-push"
  topic   = google_pubsub_topic.approval_decisions.id
  labels  = local.labels

  # The push request's deadline: at least the approvals function's timeout.
  ack_deadline_seconds       = max(60, var.functions.approvals.timeout_seconds)
  message_retention_duration = "604800s"

  push_config {
    push_endpoint = google_cloudfunctions2_function.approvals.service_config[0].uri

    # the approvals function checks this token itself (issuer, audience, identity), not only Cloud Run
    oidc_token {
      service_account_email = google_service_account.push.email
      audience              = local.approvals_url
    }
  }

  dead_letter_policy {
    dead_letter_topic     = google_pubsub_topic.approval_decisions_dead.id
    max_delivery_attempts = 5
  }

  retry_policy {
    minimum_backoff = "10s"
    maximum_backoff = "600s"
  }

  # Never expire for inactivity (the default deletes a subscription idle for 31 days).
  expiration_policy {
    ttl = ""
  }
}

# Operators read dead-lettered decisions from here (a topic without a subscription drops its messages).
resource "google_pubsub_subscription" "approval_decisions_dead" {
  project = var.project
  name    = "agex-approval-decisions-dead-pull"
  topic   = google_pubsub_topic.approval_decisions_dead.id
  labels  = local.labels

  ack_deadline_seconds       = 60
  message_retention_duration = "604800s"

  expiration_policy {
    ttl = ""
  }
}

# run.finished notifications, for consumers that pull (add one subscription per consumer).
resource "google_pubsub_subscription" "run_events" {
  project = var.project
  name    = "agex-run-events-pull"
  topic   = google_pubsub_topic.run_events.id
  labels  = local.labels

  ack_deadline_seconds       = 60
  message_retention_duration = "604800s"

  expiration_policy {
    ttl = ""
  }
}

# Dead-lettering needs the Pub/Sub service agent to publish to the dead-letter topic and to subscribe to
# (acknowledge on) the source subscription.
resource "google_pubsub_topic_iam_member" "dead_letter_publisher" {
  project = var.project
  topic   = google_pubsub_topic.approval_decisions_dead.name
  role    = "roles/pubsub.publisher"
  member  = local.service_agents.pubsub
}

resource "google_pubsub_subscription_iam_member" "dead_letter_subscriber" {
  project      = var.project
  subscription = google_pubsub_subscription.approvals_push.name
  role         = "roles/pubsub.subscriber"
  member       = local.service_agents.pubsub
}

# approval.requested, one subscription per notifier (a chat bot, an email sender). Names come from
# var.approval_request_subscriptions; the default is one pull subscription for operators.
resource "google_pubsub_subscription" "approval_requests" {
  for_each = toset(var.approval_request_subscriptions)

  project = var.project
  name    = each.value
  topic   = google_pubsub_topic.approval_requests.id
  labels  = local.labels

  ack_deadline_seconds       = 60
  message_retention_duration = "604800s"

  expiration_policy {
    ttl = ""
  }
}

# security.alert, for the members of var.security_alert_subscribers (a SIEM's service account, the security
# team's group), who may pull from this one subscription and nothing else. A consumer that needs its own copy
# of every alert gets a subscription of its own next to this one.
resource "google_pubsub_subscription" "security_alerts" {
  project = var.project
  name    = "agex-security-alerts-pull"
  topic   = google_pubsub_topic.security_alerts.id
  labels  = local.labels

  ack_deadline_seconds       = 60
  message_retention_duration = "604800s"

  expiration_policy {
    ttl = ""
  }
}

resource "google_pubsub_subscription_iam_member" "security_alert_subscribers" {
  for_each = toset(var.security_alert_subscribers)

  project      = var.project
  subscription = google_pubsub_subscription.security_alerts.name
  role         = "roles/pubsub.subscriber"
  member       = each.value
}

# drift.alert, for the members of var.drift_alert_subscribers (a notifier's service account, the team that
# owns the agents), who may pull from this one subscription and nothing else. A consumer that needs its own
# copy of every alert gets a subscription of its own next to this one.
resource "google_pubsub_subscription" "drift_alerts" {
  project = var.project
  name    = "agex-drift-alerts-inspect"
  topic   = google_pubsub_topic.drift_alerts.id
  labels  = local.labels

  ack_deadline_seconds       = 60
  message_retention_duration = "604800s"

  expiration_policy {
    ttl = ""
  }
}

resource "google_pubsub_subscription_iam_member" "drift_alert_subscribers" {
  for_each = toset(var.drift_alert_subscribers)

  project      = var.project
  subscription = google_pubsub_subscription.drift_alerts.name
  role         = "roles/pubsub.subscriber"
  member       = each.value
}

# budget.alert, for the members of var.budget_alert_subscribers (a notifier's service account, the team that
# pays for the models), who may pull from this one subscription and nothing else. A consumer that needs its
# own copy of every alert gets a subscription of its own next to this one.
resource "google_pubsub_subscription" "budget_alerts" {
  project = var.project
  name    = "agex-budget-alerts-pull"
  topic   = google_pubsub_topic.budget_alerts.id
  labels  = local.labels

  ack_deadline_seconds       = 60
  message_retention_duration = "604800s"

  expiration_policy {
    ttl = ""
  }
}

resource "google_pubsub_subscription_iam_member" "budget_alert_subscribers" {
  for_each = toset(var.budget_alert_subscribers)

  project      = var.project
  subscription = google_pubsub_subscription.budget_alerts.name
  role         = "roles/pubsub.subscriber"
  member       = each.value
}
