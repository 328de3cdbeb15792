# The four functions, all built from the one source zip (storage.tf) with their own entry point and
# each running as its own service account (iam.tf). Who may invoke each is in iam.tf.

locals {
  # The AGEX_* settings the runtime reads (shared/agex/app/settings.py, docs/operations.md). Identical for
  # the api, step and approvals functions, so that they agree on queues, URLs and audiences.
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
    AGEX_METRICS_EXPORTER     = "gcp"
    AGEX_PUBLIC_URL           = local.public_url
    AGEX_LOG_LEVEL            = var.log_level
    # approvals: who pushes decisions, and whose signatures the approvals function trusts (decisions.tf)
    AGEX_DECISIONS_PUSH_SERVICE_ACCOUNT = google_service_account.push.email
    AGEX_DECISIONS_PUSH_AUDIENCE        = local.approvals_url
    AGEX_DECISION_SOURCES               = jsonencode(local.decision_sources)
    AGEX_DECISION_SIGNING_KEY_SECRET    = google_secret_manager_secret.decision_signing_key.secret_id
    AGEX_API_SERVICE_ACCOUNT            = google_service_account.api.email
    # long-term memory (docs/memory.md): the step function embeds (recall, learning); the api lists and
    # erases, the approvals function settles conflicts, and a store refuses records of another embedder or
    # size, so all three must agree. Gemini embeddings go through Vertex AI (AGEX_VERTEX) with the step
    # function's identity, as the model does. Unused until an agent declares memory.
    AGEX_EMBEDDINGS           = var.memory_embeddings
    AGEX_EMBEDDING_DIMENSIONS = tostring(var.memory_embedding_dimensions)
  }

  # The drift function's own settings: it reads Firestore and publishes drift alerts, and needs nothing of
  # the queues, the api or approvals. No trace export: its identity holds no cloudtrace role (iam.tf).
  drift_env = merge(
    { for name in ["AGEX_PROJECT", "AGEX_LOCATION", "AGEX_FLEET_FILE", "AGEX_LOG_LEVEL"] : name => local.function_env[name] },
    {
      AGEX_TRACE_EXPORTER         = "none"
      AGEX_DRIFT_URL              = local.drift_url
      AGEX_DRIFT_AUDIENCE         = local.drift_url
      AGEX_DRIFT_INVOKER          = google_service_account.scheduler.email
      AGEX_DRIFT_WINDOW_SECONDS   = tostring(var.drift_window_seconds)
      AGEX_DRIFT_INTERVAL_SECONDS = tostring(local.drift_interval_seconds)
      AGEX_DRIFT_ALPHA            = tostring(var.drift_alpha)
      AGEX_DRIFT_MIN_RUNS         = tostring(var.drift_min_runs)
    },
  )
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
    # a thread per request, streams included (?follow=true holds one for up to the request timeout), and a
    # stream closes a minute before Cloud Run would cut it: the client reconnects with Last-Event-ID
    environment_variables = merge(local.function_env, {
      THREADS                   = tostring(var.functions.api.concurrency)
      AGEX_STREAM_MAX_SECONDS   = tostring(max(var.functions.api.timeout_seconds - 60, 30))
      AGEX_CONSOLE_IAP_AUDIENCE = try(var.console_iap.audience, "")
    })
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
  description = "agex: the drift check: collects ended runs' metrics, tests them for drift, publishes drift alerts"
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

  # An HTTP function: the drift job (scheduler.tf) POSTs to it with an OIDC token for the drift invoker, the
  # one member that may invoke it (iam.tf) and the one identity it admits in-process (AGEX_DRIFT_INVOKER).
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
    environment_variables            = local.drift_env
  }

  lifecycle {
    precondition {
      condition     = local.drift_interval_seconds != null
      error_message = "drift_schedule \"${var.drift_schedule}\" does not tick at a fixed interval Terraform can derive (every N minutes or hours, hourly, daily): set drift_interval_seconds to the time between two of its ticks."
    }
    # The check splits alpha across the window's window/interval looks: a window needs at least one.
    precondition {
      condition     = try(local.drift_interval_seconds <= var.drift_window_seconds, true)
      error_message = "drift_window_seconds (${var.drift_window_seconds}) is shorter than the time between two drift checks (${local.drift_interval_seconds} s): no check would see a whole window."
    }
  }

  depends_on = [google_project_service.apis, google_project_iam_member.build]
}
