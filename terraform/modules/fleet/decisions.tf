# Approval decisions are authenticated end to end (docs/approvals.md, docs/security.md): the api signs
# every decision it publishes with an Ed25519 key only it can read, and the approvals function applies only
# decisions that a declared public key verifies, whoever managed to reach it. The key pair is made here;
# its private half is in Terraform state as every secret Terraform creates is, so keep state in the
# locked-down bucket of backend.tf. Rotate with `terraform apply -replace=module.fleet.tls_private_key.decisions`.
resource "tls_private_key" "decisions" {
  algorithm = "ED25519"
}

resource "google_secret_manager_secret" "decision_signing_key" {
  project   = var.project
  secret_id = "agex-decision-signing-key"
  labels    = local.labels

  replication {
    auto {}
  }

  depends_on = [google_project_service.apis]
}

resource "google_secret_manager_secret_version" "decision_signing_key" {
  secret      = google_secret_manager_secret.decision_signing_key.id
  secret_data = tls_private_key.decisions.private_key_pem_pkcs8
}

# The api alone may read the signing key: a verifier that could read it could also forge.
resource "google_secret_manager_secret_iam_member" "api_reads_decision_key" {
  project   = var.project
  secret_id = google_secret_manager_secret.decision_signing_key.secret_id
  role      = "roles/secretmanager.secretAccessor"
  member    = "serviceAccount:${google_service_account.api.email}"
}

locals {
  # AGEX_DECISION_SOURCES: the api's public key, and those of the chat bots var.decision_sources declares.
  decision_sources = merge(var.decision_sources, { api = [tls_private_key.decisions.public_key_pem] })
}
