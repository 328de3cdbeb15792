output "enabled" {
  description = "The agents whose canary is enabled: name => {job (the Cloud Run job's name), schedule, max_attack_success}."
  value       = local.enabled
}

output "problems" {
  description = "What is wrong with the fleet file's canary keys, one sentence each; empty when nothing is."
  value       = local.problems
}
