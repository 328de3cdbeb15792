output "api_url" {
  description = "URL of the api function (its Cloud Run service URI)."
  value       = google_cloudfunctions2_function.api.service_config[0].uri
}

output "api_audience" {
  description = "The audience API callers' ID tokens must carry (AGEX_API_AUDIENCE)."
  value       = local.api_audience
}

output "step_url" {
  description = "URL Cloud Tasks delivers step tasks to (AGEX_STEP_URL), also their OIDC audience."
  value       = local.step_url
}

output "step_audience" {
  description = "Audience of the step tasks' OIDC tokens (AGEX_STEP_AUDIENCE)."
  value       = local.step_url
}

output "function_service_accounts" {
  description = "Runtime identity of each function."
  value       = { for name, sa in local.runtime_accounts : name => sa.email }
}

output "step_service_account_email" {
  description = "The step function's identity (impersonates agent identities to read their secrets)."
  value       = google_service_account.step.email
}

output "tasks_invoker_email" {
  description = "The identity Cloud Tasks and the sweep job sign OIDC tokens as (AGEX_STEP_SERVICE_ACCOUNT)."
  value       = google_service_account.tasks_invoker.email
}

output "push_service_account_email" {
  description = "The identity of the decisions push subscription."
  value       = google_service_account.push.email
}

output "source_bucket" {
  description = "The bucket holding the function source zips."
  value       = google_storage_bucket.source.name
}

output "source_object" {
  description = "The source zip the functions are deployed from."
  value       = coalesce(var.source_object, one(google_storage_bucket_object.source[*].name))
}

output "topics" {
  description = "Pub/Sub topic ids."
  value = {
    run_events              = google_pubsub_topic.run_events.id
    approval_requests       = google_pubsub_topic.approval_requests.id
    approval_decisions      = google_pubsub_topic.approval_decisions.id
    approval_decisions_dead = google_pubsub_topic.approval_decisions_dead.id
    drift_alerts            = google_pubsub_topic.drift_alerts.id
    security_alerts         = google_pubsub_topic.security_alerts.id
    budget_alerts           = google_pubsub_topic.budget_alerts.id
  }
}

output "security_alerts_topic" {
  description = "Name of the topic of security.alert v1 messages (agex.core.guard.SECURITY_ALERTS_TOPIC)."
  value       = google_pubsub_topic.security_alerts.name
}

output "security_alerts_subscription" {
  description = "The pull subscription var.security_alert_subscribers read security alerts from."
  value       = google_pubsub_subscription.security_alerts.name
}

output "drift_url" {
  description = "The drift function's deterministic URL: the audience of the drift job's OIDC tokens (AGEX_DRIFT_URL, AGEX_DRIFT_AUDIENCE)."
  value       = local.drift_url
}

output "drift_invoker_email" {
  description = "The identity the drift job signs OIDC tokens as, the drift function's one invoker (AGEX_DRIFT_INVOKER)."
  value       = google_service_account.scheduler.email
}

output "drift_alerts_topic" {
  description = "Name of the topic of drift.alert v1 messages (agex.core.metrics.DRIFT_ALERTS_TOPIC)."
  value       = google_pubsub_topic.drift_alerts.name
}

output "drift_alerts_subscription" {
  description = "The pull subscription var.drift_alert_subscribers read drift alerts from."
  value       = google_pubsub_subscription.drift_alerts.name
}

output "budget_alerts_topic" {
  description = "Name of the topic of budget.alert v1 messages (agex.core.spend.BUDGET_ALERTS_TOPIC)."
  value       = google_pubsub_topic.budget_alerts.name
}

output "budget_alerts_subscription" {
  description = "The pull subscription var.budget_alert_subscribers read budget alerts from."
  value       = google_pubsub_subscription.budget_alerts.name
}

output "canary_jobs" {
  description = "The red-team canary's Cloud Run job of each agent that enables it (empty while canary_image is)."
  value       = { for agent, job in google_cloud_run_v2_job.canary : agent => job.name }
}

output "canary_service_account_email" {
  description = "The canary jobs' identity; null when there is no canary job."
  value       = one(google_service_account.canary[*].email)
}

output "firestore_database" {
  description = "The Firestore database name."
  value       = google_firestore_database.main.name
}

output "console_iap_audience" {
  description = "The audience of IAP's signed header for the console (console.tf): set console_iap.audience to it and apply again."
  value       = var.console_iap == null ? null : "/projects/${data.google_project.this.number}/global/backendServices/${google_compute_backend_service.console["main"].generated_id}"
}

output "console_url" {
  description = "The console behind IAP, once its domain points at console_ip and the certificate is active."
  value       = var.console_iap == null ? null : "https://${var.console_iap.domain}/console/"
}

output "console_ip" {
  description = "The address to point the console's domain at (an A record)."
  value       = var.console_iap == null ? null : google_compute_global_address.console["main"].address
}
