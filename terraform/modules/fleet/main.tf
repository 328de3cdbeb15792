# Names, URLs and fleet-wide checks shared by the files of this module.

data "google_project" "this" {
  project_id = var.project
}

locals {
  repo_root = coalesce(var.repo_root, abspath("${path.module}/../../.."))

  names = {
    api       = "agex-api"
    step      = "agex-step"
    approvals = "agex-approvals"
    drift     = "agex-drift"
  }

  # Cloud Run's deterministic URLs (https://SERVICE-PROJECT_NUMBER.REGION.run.app). The step function
  # needs its own URL in its environment (it enqueues the next step and checks the OIDC audience), the api
  # its own audience, and the drift function the audience of the drift job's tokens: a function cannot
  # reference its own uri attribute, so all are computed.
  step_url      = "https://${local.names.step}-${data.google_project.this.number}.${var.region}.run.app"
  api_url       = "https://${local.names.api}-${data.google_project.this.number}.${var.region}.run.app"
  approvals_url = "https://${local.names.approvals}-${data.google_project.this.number}.${var.region}.run.app"
  drift_url     = "https://${local.names.drift}-${data.google_project.this.number}.${var.region}.run.app"

  api_audience = coalesce(var.api_audience, local.api_url)
  public_url   = coalesce(var.public_url, local.api_url)

  # The fleet file's view the checks need.
  all_secrets      = compact(flatten([for agent in values(var.agents) : try(agent.secrets, [])]))
  duplicate_secret = distinct([for s in local.all_secrets : s if length([for t in local.all_secrets : t if t == s]) > 1])
  all_identities   = [for agent in values(var.agents) : agent.identity]
  duplicate_ident  = distinct([for i in local.all_identities : i if length([for j in local.all_identities : j if j == i]) > 1])

  labels = merge({ app = "agex" }, var.labels)

  service_agents = {
    pubsub     = "serviceAccount:${google_project_service_identity.pubsub.email}"
    cloudtasks = "serviceAccount:${google_project_service_identity.cloudtasks.email}"
  }
}

# A secret belongs to exactly one agent: google_secret_manager_secret is created by that agent's module,
# so two agents listing the same secret id would both try to create it. Likewise for identities. Fail the
# plan with the offending names instead of a confusing 409 halfway through an apply.
resource "terraform_data" "fleet_checks" {
  input = {
    agents  = sort(keys(var.agents))
    secrets = sort(local.all_secrets)
  }

  lifecycle {
    precondition {
      condition     = length(local.duplicate_secret) == 0
      error_message = "Fleet file: secret id(s) ${join(", ", local.duplicate_secret)} are listed by more than one agent. A secret belongs to one agent (its identity alone may read it): give each agent its own secret id, e.g. support-payments-api-key and billing-payments-api-key."
    }
    precondition {
      condition     = length(local.duplicate_ident) == 0
      error_message = "Fleet file: identity(ies) ${join(", ", local.duplicate_ident)} are used by more than one agent. Each agent needs its own service account."
    }
    precondition {
      condition     = length(module.canary_settings.problems) == 0
      error_message = "Fleet file: ${join("; ", module.canary_settings.problems)}."
    }
  }
}
