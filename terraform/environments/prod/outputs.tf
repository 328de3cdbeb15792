output "api_url" {
  description = "URL of the API (agex --api URL)."
  value       = module.fleet.api_url
}

output "api_audience" {
  description = "Audience of the ID tokens the API accepts (gcloud auth print-identity-token --audiences=...)."
  value       = module.fleet.api_audience
}

output "step_url" {
  description = "URL of the step function (Cloud Tasks' target)."
  value       = module.fleet.step_url
}

output "function_service_accounts" {
  description = "Runtime identity of each function."
  value       = module.fleet.function_service_accounts
}

output "tasks_invoker_email" {
  description = "The identity step tasks and the sweep are signed as."
  value       = module.fleet.tasks_invoker_email
}

output "queue_names" {
  description = "Each agent's Cloud Tasks queue."
  value       = { for name, agent in module.agent : name => agent.queue_name }
}

output "agent_identities" {
  description = "Each agent's service account."
  value       = { for name, agent in module.agent : name => agent.identity_email }
}

output "agent_secrets" {
  description = "Each agent's secrets, to add versions to (gcloud secrets versions add)."
  value       = { for name, agent in module.agent : name => agent.secret_ids }
}

output "source_bucket" {
  description = "Bucket of the function source zips (prebuilt zips go here; see source_object)."
  value       = module.fleet.source_bucket
}

output "source_object" {
  description = "The source zip the functions run."
  value       = module.fleet.source_object
}

output "security_alerts_topic" {
  description = "The topic of security.alert messages (guardrail verdicts other than allow, canary results)."
  value       = module.fleet.security_alerts_topic
}

output "security_alerts_subscription" {
  description = "The pull subscription security_alert_subscribers read security alerts from."
  value       = module.fleet.security_alerts_subscription
}

output "drift_alerts_topic" {
  description = "The topic of drift.alert messages (an agent version's behaviour moved away from its baseline)."
  value       = module.fleet.drift_alerts_topic
}

output "drift_alerts_subscription" {
  description = "The pull subscription drift_alert_subscribers read drift alerts from (agex alerts)."
  value       = module.fleet.drift_alerts_subscription
}

output "budget_alerts_topic" {
  description = "The topic of budget.alert messages (a budget of the fleet file crossed 50%, 80% or 100%)."
  value       = module.fleet.budget_alerts_topic
}

output "budget_alerts_subscription" {
  description = "The pull subscription budget_alert_subscribers read budget alerts from."
  value       = module.fleet.budget_alerts_subscription
}

output "canary_jobs" {
  description = "The red-team canary's Cloud Run job of each agent that enables it."
  value       = module.fleet.canary_jobs
}
