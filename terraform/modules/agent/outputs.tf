output "identity_email" {
  description = "The agent's service account email."
  value       = google_service_account.agent.email
}

output "queue_name" {
  description = "The agent's Cloud Tasks queue (agex-steps-{name})."
  value       = google_cloud_tasks_queue.steps.name
}

output "queue_id" {
  description = "The queue's full resource id."
  value       = google_cloud_tasks_queue.steps.id
}

output "secret_ids" {
  description = "The agent's secrets (resource names), to add versions to."
  value       = [for s in google_secret_manager_secret.secret : s.name]
}
