# The Google APIs the fleet uses. disable_on_destroy = false: destroying the fleet must not switch off an
# API another workload of the project may use.
locals {
  services = toset(concat([
    "firestore.googleapis.com",
    "cloudtasks.googleapis.com",
    "pubsub.googleapis.com",
    "secretmanager.googleapis.com",
    "run.googleapis.com",
    "cloudfunctions.googleapis.com",
    "cloudbuild.googleapis.com",
    "artifactregistry.googleapis.com",
    "cloudscheduler.googleapis.com",
    "iam.googleapis.com",
    "iamcredentials.googleapis.com",
    "monitoring.googleapis.com",
    "logging.googleapis.com",
    "cloudtrace.googleapis.com",
    "aiplatform.googleapis.com",
    "eventarc.googleapis.com",
    "storage.googleapis.com",
    "cloudresourcemanager.googleapis.com",
    ],
    # the console's load balancer and Identity-Aware Proxy (console.tf), only when it is set up
    var.console_iap == null ? [] : ["compute.googleapis.com", "iap.googleapis.com"],
  ))
}

resource "google_project_service" "apis" {
  for_each = local.services

  project                    = var.project
  service                    = each.value
  disable_on_destroy         = false
  disable_dependent_services = false
}

# Service agents the IAM below names: created now rather than on first use, so the grants can be made.
resource "google_project_service_identity" "pubsub" {
  provider = google-beta

  project = var.project
  service = "pubsub.googleapis.com"

  depends_on = [google_project_service.apis]
}

resource "google_project_service_identity" "cloudtasks" {
  provider = google-beta

  project = var.project
  service = "cloudtasks.googleapis.com"

  depends_on = [google_project_service.apis]
}
