# One environment of the fleet. dev and prod use identical main.tf, variables.tf, outputs.tf and
# versions.tf; they differ in terraform.tfvars (project, region, instance limits, alert channels) and in
# their state prefix (backend.tf). Run from this directory: terraform init -backend-config=bucket=...,
# then terraform apply (docs/deploy.md).

provider "google" {
  project = var.project
  region  = var.region
}

provider "google-beta" {
  project = var.project
  region  = var.region
}

# The fleet file is the one declaration of the deployment's agents: the runtime reads it (it is shipped in
# the function source as AGEX_FLEET_FILE) and Terraform creates each agent's identity, queue and secrets
# from it, so the two cannot drift apart.
locals {
  fleet = yamldecode(file(var.fleet_file))
}

# Shared infrastructure: APIs, Firestore, Pub/Sub, the four functions and their identities, Cloud
# Scheduler, monitoring, the source bucket. Also checks the fleet file (no secret or identity shared by two
# agents).
module "fleet" {
  source = "../../modules/fleet"

  project                     = var.project
  region                      = var.region
  firestore_location          = var.firestore_location
  firestore_delete_protection = var.firestore_delete_protection
  agents                      = local.fleet.agents
  schedules                   = try(local.fleet.schedules, [])
  webhooks                    = try(local.fleet.webhooks, [])
  fleet_file                  = var.fleet_file
  agent_packages              = var.agent_packages
  source_object               = var.source_object
  api_invokers                = var.api_invokers
  console_iap                 = var.console_iap
  tenants                     = var.tenants
  api_audience                = var.api_audience
  public_url                  = var.public_url
  functions                   = var.functions
  alert_channels              = var.alert_channels
  labels                      = var.labels
  security_alert_subscribers  = var.security_alert_subscribers
  canary_image                = var.canary_image
  drift_schedule              = var.drift.schedule
  drift_interval_seconds      = var.drift.interval_seconds
  drift_window_seconds        = var.drift.window_seconds
  drift_alpha                 = var.drift.alpha
  drift_min_runs              = var.drift.min_runs
  drift_alert_subscribers     = var.drift_alert_subscribers
  budget_alert_subscribers    = var.budget_alert_subscribers
  memory_embeddings           = var.memory_embeddings
  memory_embedding_dimensions = var.memory_embedding_dimensions
}

# One module per agent of the fleet file: its identity, its step queue agex-steps-{agent}, its secrets
# (readable by its identity alone) and the step function's right to impersonate it.
module "agent" {
  source   = "../../modules/agent"
  for_each = local.fleet.agents

  project  = var.project
  region   = var.region
  name     = each.key
  identity = each.value.identity
  secrets  = try(each.value.secrets, [])
  queue = {
    max_dispatches_per_second = try(each.value.queue.max_dispatches_per_second, 50)
    max_concurrent_dispatches = try(each.value.queue.max_concurrent_dispatches, 100)
    max_attempts              = try(each.value.queue.max_attempts, 100)
  }
  step_service_account_email = module.fleet.step_service_account_email
  tasks_invoker_email        = module.fleet.tasks_invoker_email
  step_audience              = module.fleet.step_audience
  labels                     = var.labels

  # APIs enabled, service agents created and the fleet file checked before any agent resource.
  depends_on = [module.fleet]
}
