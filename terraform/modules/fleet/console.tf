# The console behind Identity-Aware Proxy (docs/console.md): an external HTTPS load balancer whose one backend
# is the api function (a serverless network endpoint group), with IAP on that backend. People sign in with
# Google at IAP; IAP lets through the members listed in console_iap.members and vouches for each request in a
# signed header, which the api function checks (AGEX_CONSOLE_IAP_AUDIENCE) before it maps the email to a
# tenant (AGEX_TENANTS). Off unless console_iap is set.
#
# Two applies: the header's audience names the backend service, which exists only after the first one
# (terraform output console_iap_audience); set console_iap.audience to it and apply again. Until then the
# console asks for a token instead.

locals {
  console = var.console_iap == null ? {} : { main = var.console_iap }
}

resource "google_compute_region_network_endpoint_group" "api" {
  for_each = local.console

  project               = var.project
  name                  = "agex-api"
  region                = var.region
  network_endpoint_type = "SERVERLESS"

  cloud_run {
    service = google_cloudfunctions2_function.api.name
  }

  depends_on = [google_project_service.apis]
}

resource "google_compute_backend_service" "console" {
  for_each = local.console

  project               = var.project
  name                  = "agex-console"
  protocol              = "HTTPS"
  load_balancing_scheme = "EXTERNAL_MANAGED"

  backend {
    group = google_compute_region_network_endpoint_group.api["main"].id
  }

  iap {
    enabled = true
  }

  log_config {
    enable = true
  }
}

resource "google_compute_url_map" "console" {
  for_each = local.console

  project         = var.project
  name            = "agex-console"
  default_service = google_compute_backend_service.console["main"].id
}

resource "google_compute_managed_ssl_certificate" "console" {
  for_each = local.console

  project = var.project
  name    = "agex-console"

  managed {
    domains = [each.value.domain]
  }
}

resource "google_compute_ssl_policy" "console" {
  for_each = local.console

  project         = var.project
  name            = "agex-console"
  profile         = "MODERN"
  min_tls_version = "TLS_1_2"
}

resource "google_compute_target_https_proxy" "console" {
  for_each = local.console

  project          = var.project
  name             = "agex-console"
  url_map          = google_compute_url_map.console["main"].id
  ssl_certificates = [google_compute_managed_ssl_certificate.console["main"].id]
  ssl_policy       = google_compute_ssl_policy.console["main"].id
}

resource "google_compute_global_address" "console" {
  for_each = local.console

  project = var.project
  name    = "agex-console"
}

resource "google_compute_global_forwarding_rule" "console" {
  for_each = local.console

  project               = var.project
  name                  = "agex-console"
  target                = google_compute_target_https_proxy.console["main"].id
  ip_address            = google_compute_global_address.console["main"].id
  port_range            = "443"
  load_balancing_scheme = "EXTERNAL_MANAGED"
}

# who may pass IAP: the console's people (IAP checks this; the api function then maps them to tenants)
resource "google_iap_web_backend_service_iam_member" "console" {
  for_each = var.console_iap == null ? toset([]) : toset(var.console_iap.members)

  project             = var.project
  web_backend_service = google_compute_backend_service.console["main"].name
  role                = "roles/iap.httpsResourceAccessor"
  member              = each.value
}

# IAP's service agent calls the api function on their behalf
resource "google_project_service_identity" "iap" {
  for_each = local.console
  provider = google-beta

  project = var.project
  service = "iap.googleapis.com"
}

resource "google_cloud_run_service_iam_member" "api_iap_invoker" {
  for_each = local.console

  project  = var.project
  location = var.region
  service  = google_cloudfunctions2_function.api.name
  role     = "roles/run.invoker"
  member   = "serviceAccount:${google_project_service_identity.iap["main"].email}"
}
