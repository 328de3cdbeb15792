# Completion webhooks (docs/webhooks.md): the fleet file's `webhooks`, each signed with a key in Secret Manager
# that the step function (which delivers them) alone reads. The secret is made here without a version: add the
# key out of band (gcloud secrets versions add), and share it with the endpoint's owners, who verify with it.
resource "google_secret_manager_secret" "webhook" {
  for_each = toset(distinct([for w in var.webhooks : w.secret]))

  project   = var.project
  secret_id = each.key
  labels    = local.labels

  replication {
    auto {}
  }

  depends_on = [google_project_service.apis]
}

resource "google_secret_manager_secret_iam_member" "step_reads_webhook_key" {
  for_each = google_secret_manager_secret.webhook

  project   = var.project
  secret_id = each.value.secret_id
  role      = "roles/secretmanager.secretAccessor"
  member    = "serviceAccount:${google_service_account.step.email}"
}
