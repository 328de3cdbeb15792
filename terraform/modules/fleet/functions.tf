# The four functions, all built from the one source zip (storage.tf) with their own entry point and
# each running as its own service account (iam.tf). Who may invoke each is in iam.tf.

locals {
  # The AGEX_* settings the runtime reads (shared/agex/settings.py, docs/operations.md). Identical for every
  # function, so that the api, step and approvals functions agree on queues, URLs and audiences.
  function_env = {
    AGEX_PROJECT              = var.project
    AGEX_LOCATION             = var.region
    AGEX_FLEET_FILE           = "fleet.yaml" # shipped in the zip; main.py resolves it beside itself
    AGEX_QUEUE                = "agex-steps"
    AGEX_PER_AGENT_QUEUES     = "true" # each agent's tasks go to agex-steps-{agent} (modules/agent)
    AGEX_STEP_URL             = local.step_url
    AGEX_STEP_AUDIENCE        = local.step_url
    AGEX_STEP_SERVICE_ACCOUNT = google_service_account.tasks_invoker.email
    AGEX_AUTHENTICATOR        = "google"
    AGEX_API_AUDIENCE         = local.api_audience
    AGEX_TENANTS              = var.tenants
    AGEX_DEV_TOKENS           = "" # no static tokens in the cloud
    AGEX_VERTEX               = "true"
    AGEX_TRACE_EXPORTER       = "gcp"
    AGEX_PUBLIC_URL           = local.public_url
    AGEX_LOG_LEVEL            = var.log_level
    # approvals: who pushes decisions, and whose signatures the approvals function trusts (decisions.tf)
    AGEX_DECISIONS_PUSH_SERVICE_ACCOUNT = google_service_account.push.email
    AGEX_DECISIONS_PUSH_AUDIENCE        = local.approvals_url
    AGEX_DECISION_SOURCES               = jsonencode(local.decision_sources)
    AGEX_DECISION_SIGNING_KEY_SECRET    = google_secret_manager_secret.decision_signing_key.secret_id
    AGEX_API_SERVICE_ACCOUNT            = google_service_account.api.email
  }
}

resource "google_cloudfunctions2_function" "api" {
  project     = var.project
  name        = local.names.api
  location    = var.region
  description = "agex: the public HTTP API (docs/api.md)"
  labels      = local.labels

  build_config {
    runtime         = "python311"
    entry_point     = "api"
    service_account = google_service_account.build.id

    source {
      storage_source {
        bucket = google_storage_bucket.source.name
        # the zip Terraform uploaded, or var.source_object (a prebuilt zip in the same bucket)
        object = coalesce(var.source_object, one(google_storage_bucket_object.source[*].name))
      }
    }
  }

  service_config {
    available_memory                 = var.functions.api.memory
    available_cpu                    = var.functions.api.cpu
    timeout_seconds                  = var.functions.api.timeout_seconds
    max_instance_request_concurrency = var.functions.api.concurrency
    min_instance_count               = var.functions.api.min_instances
    max_instance_count               = var.functions.api.max_instances
    ingress_settings                 = var.api_ingress
    all_traffic_on_latest_revision   = true
    service_account_email            = google_service_account.api.email
    environment_variables            = local.function_env
  }

  depends_on = [google_project_service.apis, google_project_iam_member.build]
}

resource "google_cloudfunctions2_function" "step" {
  project     = var.project
  name        = local.names.step
  location    = var.region
  description = "agex: one step of one run, delivered by Cloud Tasks; the sweep"
  labels      = local.labels

  build_config {
    runtime         = "python311"
    entry_point     = "step"
    service_account = google_service_account.build.id

    source {
      storage_source {
        bucket = google_storage_bucket.source.name
        # the zip Terraform uploaded, or var.source_object (a prebuilt zip in the same bucket)
        object = coalesce(var.source_object, one(google_storage_bucket_object.source[*].name))
      }
    }
  }

  service_config {
    available_memory                 = var.functions.step.memory
    available_cpu                    = var.functions.step.cpu
    timeout_seconds                  = var.functions.step.timeout_seconds
    max_instance_request_concurrency = var.functions.step.concurrency
    min_instance_count               = var.functions.step.min_instances
    max_instance_count               = var.functions.step.max_instances
    ingress_settings                 = var.internal_ingress
    all_traffic_on_latest_revision   = true
    service_account_email            = google_service_account.step.email
    environment_variables            = local.function_env
  }

  depends_on = [google_project_service.apis, google_project_iam_member.build]
}

resource "google_cloudfunctions2_function" "approvals" {
  project     = var.project
  name        = local.names.approvals
  location    = var.region
  description = "agex: applies approval decisions pushed from agex-approval-decisions"
  labels      = local.labels

  build_config {
    runtime         = "python311"
    entry_point     = "approvals"
    service_account = google_service_account.build.id

    source {
      storage_source {
        bucket = google_storage_bucket.source.name
        # the zip Terraform uploaded, or var.source_object (a prebuilt zip in the same bucket)
        object = coalesce(var.source_object, one(google_storage_bucket_object.source[*].name))
      }
    }
  }

  service_config {
    available_memory                 = var.functions.approvals.memory
    available_cpu                    = var.functions.approvals.cpu
    timeout_seconds                  = var.functions.approvals.timeout_seconds
    max_instance_request_concurrency = var.functions.approvals.concurrency
    min_instance_count               = var.functions.approvals.min_instances
    max_instance_count               = var.functions.approvals.max_instances
    ingress_settings                 = var.internal_ingress
    all_traffic_on_latest_revision   = true
    service_account_email            = google_service_account.approvals.email
    environment_variables            = local.function_env
  }

  depends_on = [google_project_service.apis, google_project_iam_member.build]
}

resource "google_cloudfunctions2_function" "drift" {
  project     = var.project
  name        = local.names.drift
  location    = var.region
  description = "agex: drift check of the fleet file against the deployment (not implemented yet)"
  labels      = local.labels

  build_config {
    runtime         = "python311"
    entry_point     = "drift"
    service_account = google_service_account.build.id

    source {
      storage_source {
        bucket = google_storage_bucket.source.name
        # the zip Terraform uploaded, or var.source_object (a prebuilt zip in the same bucket)
        object = coalesce(var.source_object, one(google_storage_bucket_object.source[*].name))
      }
    }
  }

  service_config {
    available_memory                 = var.functions.drift.memory
    available_cpu                    = var.functions.drift.cpu
    timeout_seconds                  = var.functions.drift.timeout_seconds
    max_instance_request_concurrency = var.functions.drift.concurrency
    min_instance_count               = var.functions.drift.min_instances
    max_instance_count               = var.functions.drift.max_instances
    ingress_settings                 = var.internal_ingress
    all_traffic_on_latest_revision   = true
    service_account_email            = google_service_account.drift.email
    environment_variables            = local.function_env
  }

  # Cloud Scheduler publishes to agex-drift-alerts (scheduler.tf); Eventarc delivers each message to the
  # function with an OIDC token for the scheduler account, the drift function's only invoker.
  event_trigger {
    trigger_region        = var.region
    event_type            = "google.cloud.pubsub.topic.v1.messagePublished"
    pubsub_topic          = google_pubsub_topic.drift_alerts.id
    retry_policy          = "RETRY_POLICY_DO_NOT_RETRY"
    service_account_email = google_service_account.scheduler.email
  }

  depends_on = [google_project_service.apis, google_project_iam_member.build]
}
