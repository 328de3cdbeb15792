# Identities and their grants. Each function runs as its own service account (never shared); the
# identities that call the functions (Cloud Tasks and the sweep, Pub/Sub push, the drift job) are
# separate accounts that hold nothing but the right to invoke one function. Per-agent identities and their
# secret grants live in modules/agent; the red-team canary's identities and grants in canary.tf. The table
# is in docs/security.md.

# --- runtime identities, one per function --------------------------------------------------------------

resource "google_service_account" "api" {
  project      = var.project
  account_id   = "agex-api"
  display_name = "agex api function"
  description  = "Runtime identity of the agex api function."

  depends_on = [google_project_service.apis]
}

resource "google_service_account" "step" {
  project      = var.project
  account_id   = "agex-step"
  display_name = "agex step function"
  description  = "Runtime identity of the agex step function; impersonates agent identities to read their secrets."

  depends_on = [google_project_service.apis]
}

resource "google_service_account" "approvals" {
  project      = var.project
  account_id   = "agex-approvals"
  display_name = "agex approvals function"
  description  = "Runtime identity of the agex approvals function."

  depends_on = [google_project_service.apis]
}

resource "google_service_account" "drift" {
  project      = var.project
  account_id   = "agex-drift"
  display_name = "agex drift function"
  description  = "Runtime identity of the agex drift function: reads and writes Firestore, publishes drift alerts."

  depends_on = [google_project_service.apis]
}

# --- caller identities ---------------------------------------------------------------------------------

# Cloud Tasks signs every step and approval-expiry task's OIDC token as this account, and the sweep job
# uses it too; it is the only member that may invoke the step function (AGEX_STEP_SERVICE_ACCOUNT, which
# the step function checks again in-process).
resource "google_service_account" "tasks_invoker" {
  project      = var.project
  account_id   = "agex-tasks-invoker"
  display_name = "agex step invoker (Cloud Tasks, sweep)"
  description  = "Identity of the OIDC tokens of step tasks and of the sweep job; may only invoke the step function."

  depends_on = [google_project_service.apis]
}

# Pub/Sub signs the decisions push subscription's requests as this account.
resource "google_service_account" "push" {
  project      = var.project
  account_id   = "agex-push"
  display_name = "agex decisions push"
  description  = "Identity of the OIDC tokens of the approval decisions push subscription; may only invoke the approvals function."

  depends_on = [google_project_service.apis]
}

# The drift job (Cloud Scheduler, scheduler.tf) signs its OIDC token as this account; it is the only member
# that may invoke the drift function (AGEX_DRIFT_INVOKER, which the drift function checks again in-process).
# Cloud Scheduler's service agent mints the token through its own role, as for the sweep.
resource "google_service_account" "scheduler" {
  project      = var.project
  account_id   = "agex-scheduler"
  display_name = "agex drift invoker (Cloud Scheduler)"
  description  = "Identity of the OIDC tokens of the drift job; may only invoke the drift function."

  depends_on = [google_project_service.apis]
}

# Cloud Build builds the function images as this account instead of the default compute account.
resource "google_service_account" "build" {
  project      = var.project
  account_id   = "agex-build"
  display_name = "agex function builds"
  description  = "Cloud Build identity for building the agex function images."

  depends_on = [google_project_service.apis]
}

# --- project-level roles of the runtime identities -------------------------------------------------------
# datastore.user: Firestore reads and writes (runs, events, approvals, limits); Firestore has no finer IAM.
# cloudtasks.enqueuer: create step and approval-expiry tasks.
# cloudtrace.agent: the api, step and approvals functions export their spans (AGEX_TRACE_EXPORTER=gcp); the
# api's is the run's root.
# monitoring.metricWriter: the functions write their OpenTelemetry metrics (AGEX_METRICS_EXPORTER=gcp).

resource "google_project_iam_member" "api" {
  for_each = toset([
    "roles/datastore.user",
    "roles/cloudtasks.enqueuer",
    "roles/cloudtrace.agent",
    "roles/monitoring.metricWriter",
  ])

  project = var.project
  role    = each.value
  member  = "serviceAccount:${google_service_account.api.email}"
}

resource "google_project_iam_member" "step" {
  for_each = toset([
    "roles/datastore.user",
    "roles/cloudtasks.enqueuer",
    "roles/cloudtasks.viewer", # the sweep asks whether a run's next task still exists (tasks.get)
    "roles/aiplatform.user",   # Gemini on Vertex AI (AGEX_VERTEX=true)
    "roles/cloudtrace.agent",
    "roles/monitoring.metricWriter",
  ])

  project = var.project
  role    = each.value
  member  = "serviceAccount:${google_service_account.step.email}"
}

resource "google_project_iam_member" "approvals" {
  for_each = toset([
    "roles/datastore.user",
    "roles/cloudtasks.enqueuer",
    "roles/cloudtrace.agent",
    "roles/monitoring.metricWriter",
  ])

  project = var.project
  role    = each.value
  member  = "serviceAccount:${google_service_account.approvals.email}"
}

# The drift function reads ended runs and their metrics and writes metrics records, baselines and alert
# claims; it publishes on agex-drift-alerts alone (below) and exports no spans.
resource "google_project_iam_member" "drift" {
  for_each = toset([
    "roles/datastore.user",
  ])

  project = var.project
  role    = each.value
  member  = "serviceAccount:${google_service_account.drift.email}"
}

locals {
  runtime_accounts = {
    api       = google_service_account.api
    step      = google_service_account.step
    approvals = google_service_account.approvals
    drift     = google_service_account.drift
  }
}

# --- resource-level grants ----------------------------------------------------------------------------

# The api publishes decisions (POST /v1/approvals/{id}). Bots that decide must be granted this too, and no
# one else: a publisher vouches for the decider's identity.
resource "google_pubsub_topic_iam_member" "api_publishes_decisions" {
  project = var.project
  topic   = google_pubsub_topic.approval_decisions.name
  role    = "roles/pubsub.publisher"
  member  = "serviceAccount:${google_service_account.api.email}"
}

# The step function announces finished runs and approval requests.
resource "google_pubsub_topic_iam_member" "step_publishes_run_events" {
  project = var.project
  topic   = google_pubsub_topic.run_events.name
  role    = "roles/pubsub.publisher"
  member  = "serviceAccount:${google_service_account.step.email}"
}

resource "google_pubsub_topic_iam_member" "step_publishes_approval_requests" {
  project = var.project
  topic   = google_pubsub_topic.approval_requests.name
  role    = "roles/pubsub.publisher"
  member  = "serviceAccount:${google_service_account.step.email}"
}

# Guardrail verdicts other than allow are published as security alerts by the step function, which runs
# the chain on every channel (the run's input is checked at its first step, not by the api). The canary
# publishes its results too (canary.tf).
resource "google_pubsub_topic_iam_member" "step_publishes_security_alerts" {
  project = var.project
  topic   = google_pubsub_topic.security_alerts.name
  role    = "roles/pubsub.publisher"
  member  = "serviceAccount:${google_service_account.step.email}"
}

# The drift function publishes drift.alert messages, and nothing else publishes there.
resource "google_pubsub_topic_iam_member" "drift_publishes_drift_alerts" {
  project = var.project
  topic   = google_pubsub_topic.drift_alerts.name
  role    = "roles/pubsub.publisher"
  member  = "serviceAccount:${google_service_account.drift.email}"
}

# Budget alerts are sent by whichever instance first sees a budget cross a threshold: the api when it admits
# a run, the step function when it checks a model call. Nothing else publishes there.
resource "google_pubsub_topic_iam_member" "api_publishes_budget_alerts" {
  project = var.project
  topic   = google_pubsub_topic.budget_alerts.name
  role    = "roles/pubsub.publisher"
  member  = "serviceAccount:${google_service_account.api.email}"
}

resource "google_pubsub_topic_iam_member" "step_publishes_budget_alerts" {
  project = var.project
  topic   = google_pubsub_topic.budget_alerts.name
  role    = "roles/pubsub.publisher"
  member  = "serviceAccount:${google_service_account.step.email}"
}

# Creating a task with an OIDC token for tasks_invoker needs iam.serviceAccounts.actAs on it: granted to
# the three functions that enqueue, on that one account only.
resource "google_service_account_iam_member" "api_acts_as_tasks_invoker" {
  service_account_id = google_service_account.tasks_invoker.name
  role               = "roles/iam.serviceAccountUser"
  member             = "serviceAccount:${google_service_account.api.email}"
}

resource "google_service_account_iam_member" "step_acts_as_tasks_invoker" {
  service_account_id = google_service_account.tasks_invoker.name
  role               = "roles/iam.serviceAccountUser"
  member             = "serviceAccount:${google_service_account.step.email}"
}

resource "google_service_account_iam_member" "approvals_acts_as_tasks_invoker" {
  service_account_id = google_service_account.tasks_invoker.name
  role               = "roles/iam.serviceAccountUser"
  member             = "serviceAccount:${google_service_account.approvals.email}"
}

# Cloud Tasks' service agent mints the tasks' OIDC tokens as tasks_invoker.
resource "google_service_account_iam_member" "cloudtasks_agent_signs_as_tasks_invoker" {
  service_account_id = google_service_account.tasks_invoker.name
  role               = "roles/iam.serviceAccountTokenCreator"
  member             = local.service_agents.cloudtasks
}

# Pub/Sub's service agent mints the decisions push subscription's OIDC tokens as push.
resource "google_service_account_iam_member" "pubsub_agent_signs_as_push" {
  service_account_id = google_service_account.push.name
  role               = "roles/iam.serviceAccountTokenCreator"
  member             = local.service_agents.pubsub
}

# --- the build identity ----------------------------------------------------------------------------------

resource "google_project_iam_member" "build" {
  for_each = toset([
    "roles/logging.logWriter",       # build logs
    "roles/artifactregistry.writer", # push the function images (gcf-artifacts)
    # Read the source: Cloud Functions copies the zip from the source bucket into its own
    # gcf-v2-sources-NUMBER-REGION bucket and the build reads it there, so a bucket-level grant is not enough.
    "roles/storage.objectViewer",
  ])

  project = var.project
  role    = each.value
  member  = "serviceAccount:${google_service_account.build.email}"
}

# --- who may invoke which function (roles/run.invoker on the function's Cloud Run service) ---------------

# api: only the members the environment lists (groups of people, apps' service accounts).
resource "google_cloud_run_service_iam_member" "api_invoker" {
  for_each = toset(var.api_invokers)

  project  = var.project
  location = var.region
  service  = google_cloudfunctions2_function.api.name
  role     = "roles/run.invoker"
  member   = each.value
}

# step: only the identity Cloud Tasks and the sweep job sign as.
resource "google_cloud_run_service_iam_member" "step_invoker" {
  project  = var.project
  location = var.region
  service  = google_cloudfunctions2_function.step.name
  role     = "roles/run.invoker"
  member   = "serviceAccount:${google_service_account.tasks_invoker.email}"
}

# approvals: only the decisions push subscription's identity.
resource "google_cloud_run_service_iam_member" "approvals_invoker" {
  project  = var.project
  location = var.region
  service  = google_cloudfunctions2_function.approvals.name
  role     = "roles/run.invoker"
  member   = "serviceAccount:${google_service_account.push.email}"
}

# drift: only the drift job's identity.
resource "google_cloud_run_service_iam_member" "drift_invoker" {
  project  = var.project
  location = var.region
  service  = google_cloudfunctions2_function.drift.name
  role     = "roles/run.invoker"
  member   = "serviceAccount:${google_service_account.scheduler.email}"
}
