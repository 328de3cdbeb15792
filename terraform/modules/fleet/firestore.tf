# Firestore: the (default) database the runtime uses (FirestoreCheckpointStore(project=...)), its composite
# indexes, TTL policies on expire_at and single-field index exemptions. See docs/operations.md ("What the
# cloud needs") and the docstrings of agex.adapters.gcp.firestore_store, agex.adapters.gcp.firestore_limiter,
# agex.adapters.gcp.firestore_metrics, agex.adapters.gcp.firestore_spend, agex.adapters.gcp.firestore_degradations
# and agex.adapters.gcp.firestore_threads.

resource "google_firestore_database" "main" {
  project                           = var.project
  name                              = "(default)"
  location_id                       = coalesce(var.firestore_location, var.region)
  type                              = "FIRESTORE_NATIVE"
  concurrency_mode                  = "OPTIMISTIC"
  app_engine_integration_mode       = "DISABLED"
  point_in_time_recovery_enablement = "POINT_IN_TIME_RECOVERY_ENABLED"
  delete_protection_state           = var.firestore_delete_protection ? "DELETE_PROTECTION_ENABLED" : "DELETE_PROTECTION_DISABLED"

  # Leave the data in place when the resource leaves the state; deleting a database is an explicit act.
  deletion_policy = "ABANDON"

  depends_on = [google_project_service.apis]
}

# The sweep: active runs with no write for AGEX_SWEEP_AFTER_SECONDS (find_runs).
resource "google_firestore_index" "runs_status_updated_at" {
  project     = var.project
  database    = google_firestore_database.main.name
  collection  = "runs"
  query_scope = "COLLECTION_GROUP"

  fields {
    field_path = "status"
    order      = "ASCENDING"
  }
  fields {
    field_path = "updated_at"
    order      = "ASCENDING"
  }
}

# The sweep: waiting runs whose timer or approval expiry is overdue (find_waiting).
resource "google_firestore_index" "runs_status_wake_at" {
  project     = var.project
  database    = google_firestore_database.main.name
  collection  = "runs"
  query_scope = "COLLECTION_GROUP"

  fields {
    field_path = "status"
    order      = "ASCENDING"
  }
  fields {
    field_path = "wake_at"
    order      = "ASCENDING"
  }
}

# Listing a tenant's runs (tenants/{t}/runs, GET /v1/runs, FirestoreCheckpointStore.list_runs): any
# combination of the equality filters agent, status, principal and thread_id (a thread's turns), then newest
# first by created_at and run_id (the page cursor), with an optional created_at range. Every subset is
# spelled out so each index keeps a stable key whatever filters are added later.
resource "google_firestore_index" "runs_listing" {
  for_each = {
    "all"                           = []
    "agent"                         = ["agent"]
    "status"                        = ["status"]
    "principal"                     = ["principal"]
    "agent_status"                  = ["agent", "status"]
    "agent_principal"               = ["agent", "principal"]
    "status_principal"              = ["status", "principal"]
    "agent_status_principal"        = ["agent", "status", "principal"]
    "thread"                        = ["thread_id"]
    "agent_thread"                  = ["agent", "thread_id"]
    "status_thread"                 = ["status", "thread_id"]
    "principal_thread"              = ["principal", "thread_id"]
    "agent_status_thread"           = ["agent", "status", "thread_id"]
    "agent_principal_thread"        = ["agent", "principal", "thread_id"]
    "status_principal_thread"       = ["status", "principal", "thread_id"]
    "agent_status_principal_thread" = ["agent", "status", "principal", "thread_id"]
  }

  project     = var.project
  database    = google_firestore_database.main.name
  collection  = "runs"
  query_scope = "COLLECTION"

  dynamic "fields" {
    for_each = each.value
    content {
      field_path = fields.value
      order      = "ASCENDING"
    }
  }
  fields {
    field_path = "created_at"
    order      = "DESCENDING"
  }
  fields {
    field_path = "run_id"
    order      = "DESCENDING"
  }
}

# Listing a tenant's approvals of one status (tenants/{t}/approvals).
resource "google_firestore_index" "approvals_status_created_at" {
  project     = var.project
  database    = google_firestore_database.main.name
  collection  = "approvals"
  query_scope = "COLLECTION"

  fields {
    field_path = "status"
    order      = "ASCENDING"
  }
  fields {
    field_path = "created_at"
    order      = "ASCENDING"
  }
  fields {
    field_path = "approval_id"
    order      = "ASCENDING"
  }
}

# Listing a tenant's approvals of every status.
resource "google_firestore_index" "approvals_created_at" {
  project     = var.project
  database    = google_firestore_database.main.name
  collection  = "approvals"
  query_scope = "COLLECTION"

  fields {
    field_path = "created_at"
    order      = "ASCENDING"
  }
  fields {
    field_path = "approval_id"
    order      = "ASCENDING"
  }
}

# Runs' metrics (tenants/{t}/run_metrics, FirestoreMetricsStore.query_run_metrics), ordered by ended_at:
# the drift function reads one agent (version) across every tenant (collection group), the API one tenant.
resource "google_firestore_index" "run_metrics" {
  for_each = {
    "group_agent"              = { scope = "COLLECTION_GROUP", fields = ["agent"] }
    "group_agent_version"      = { scope = "COLLECTION_GROUP", fields = ["agent", "agent_version"] }
    "collection_agent"         = { scope = "COLLECTION", fields = ["agent"] }
    "collection_agent_version" = { scope = "COLLECTION", fields = ["agent", "agent_version"] }
  }

  project     = var.project
  database    = google_firestore_database.main.name
  collection  = "run_metrics"
  query_scope = each.value.scope

  dynamic "fields" {
    for_each = each.value.fields
    content {
      field_path = fields.value
      order      = "ASCENDING"
    }
  }
  fields {
    field_path = "ended_at"
    order      = "ASCENDING"
  }
}

# Single-field indexes in both scopes: Firestore keeps them at collection scope only by default, and these
# fields are also queried across every tenant (a collection group).
# - run_metrics.ended_at: every agent's runs' metrics across tenants (the drift function's collector), and a
#   tenant's own query;
# - runs.status: unfinished runs per agent version (FirestoreCheckpointStore.unfinished_versions), `status in
#   [...]` across every tenant for the deploy's retire-check, and within a tenant with `agent ==` for
#   GET /v1/agents/{agent}/versions (docs/versions.md).
resource "google_firestore_field" "both_scopes" {
  for_each = {
    "run_metrics.ended_at" = { collection = "run_metrics", field = "ended_at" }
    "runs.status"          = { collection = "runs", field = "status" }
  }

  project    = var.project
  database   = google_firestore_database.main.name
  collection = each.value.collection
  field      = each.value.field

  index_config {
    indexes {
      order       = "ASCENDING"
      query_scope = "COLLECTION"
    }
    indexes {
      order       = "ASCENDING"
      query_scope = "COLLECTION_GROUP"
    }
  }
}

moved {
  from = google_firestore_field.run_metrics_ended_at
  to   = google_firestore_field.both_scopes["run_metrics.ended_at"]
}

# Drift alerts of one agent, newest first (FirestoreMetricsStore.list_alerts).
resource "google_firestore_index" "drift_alerts_agent_detected_at" {
  project     = var.project
  database    = google_firestore_database.main.name
  collection  = "drift_alerts"
  query_scope = "COLLECTION"

  fields {
    field_path = "agent"
    order      = "ASCENDING"
  }
  fields {
    field_path = "detected_at"
    order      = "DESCENDING"
  }
}

# A tenant's evaluation results of an agent, newest first, of one version, accepted or not, or both
# (tenants/{t}/evals, FirestoreMetricsStore.list_evals).
resource "google_firestore_index" "evals" {
  for_each = {
    "agent"                  = ["agent"]
    "agent_version"          = ["agent", "version"]
    "agent_accepted"         = ["agent", "accepted"]
    "agent_version_accepted" = ["agent", "version", "accepted"]
  }

  project     = var.project
  database    = google_firestore_database.main.name
  collection  = "evals"
  query_scope = "COLLECTION"

  dynamic "fields" {
    for_each = each.value
    content {
      field_path = fields.value
      order      = "ASCENDING"
    }
  }
  fields {
    field_path = "created_at"
    order      = "DESCENDING"
  }
}

# Budgets' spend ledger (spend, FirestoreSpendLedger): each budget scope's equality and `in` filters, in the
# order the query states them, then a range on `at`; the same query is summed (sum of cost_usd and tokens)
# and read oldest first (ordered by at). A deployment-wide budget restricted to nothing filters on `at`
# alone: the automatic single-field index serves it.
resource "google_firestore_index" "spend" {
  for_each = {
    "tenant"                 = ["tenant"]                       # tenant; deployment restricted to tenants
    "tenant_agent"           = ["tenant", "agent"]              # tenant restricted to agents; deployment to both
    "tenant_principal"       = ["tenant", "principal"]          # user
    "tenant_principal_agent" = ["tenant", "principal", "agent"] # user restricted to agents
    "agent"                  = ["agent"]                        # agent; deployment restricted to agents
    "agent_tenant"           = ["agent", "tenant"]              # agent restricted to tenants
  }

  project     = var.project
  database    = google_firestore_database.main.name
  collection  = "spend"
  query_scope = "COLLECTION"

  dynamic "fields" {
    for_each = each.value
    content {
      field_path = fields.value
      order      = "ASCENDING"
    }
  }
  fields {
    field_path = "at"
    order      = "ASCENDING"
  }
}

# Long-term memory (tenants/{t}/memories, agex.adapters.gcp.firestore_memory, docs/memory.md "Indexes").
# Memory exists only when an agent declares it (Agent.memory), but these indexes are created in every
# deployment: an index over an empty collection costs nothing, and an agent that starts to remember must
# not wait for a Terraform apply and an index build before its first search.
#
# Search: one nearest-neighbour query (COSINE) per scope named, over its current records (scope_key,
# current) or over all of them (scope_key alone: at= and include_superseded). Other filters (kind, status,
# model, metadata) are applied after the search, so these two serve every search. The vector index is
# declared with the size of the vectors stored: a vector of another size is left out of it, silently, so
# memory_embedding_dimensions must be the embedder's (the precondition holds it for the local model).
# Changing it replaces both indexes; vectors already stored keep their old size and must be re-embedded.
resource "google_firestore_index" "memories_vector" {
  for_each = {
    "current" = ["scope_key", "current"]
    "all"     = ["scope_key"]
  }

  project     = var.project
  database    = google_firestore_database.main.name
  collection  = "memories"
  query_scope = "COLLECTION"

  dynamic "fields" {
    for_each = each.value
    content {
      field_path = fields.value
      order      = "ASCENDING"
    }
  }
  fields {
    field_path = "embedding"
    vector_config {
      dimension = var.memory_embedding_dimensions
      flat {}
    }
  }

  lifecycle {
    precondition {
      condition     = var.memory_embeddings != "local" || var.memory_embedding_dimensions == 384
      error_message = "memory_embeddings = \"local\" stores vectors of 384 dimensions (all-MiniLM-L6-v2), not ${var.memory_embedding_dimensions}: set memory_embedding_dimensions = 384, or choose gemini:MODEL for vectors of another size."
    }
  }
}

# Listing a scope's memories newest first (FirestoreVectorStore.list_records), the page cursor on id.
resource "google_firestore_index" "memories_listing" {
  project     = var.project
  database    = google_firestore_database.main.name
  collection  = "memories"
  query_scope = "COLLECTION"

  fields {
    field_path = "scope_key"
    order      = "ASCENDING"
  }
  fields {
    field_path = "created_at"
    order      = "DESCENDING"
  }
  fields {
    field_path = "id"
    order      = "DESCENDING"
  }
}

# The current records about one thing in a scope (FirestoreVectorStore.about: what a fact learned may repeat or
# contradict): equalities only, but metadata is exempt from single-field indexing, so a composite index.
resource "google_firestore_index" "memories_about" {
  project     = var.project
  database    = google_firestore_database.main.name
  collection  = "memories"
  query_scope = "COLLECTION"

  fields {
    field_path = "scope_key"
    order      = "ASCENDING"
  }
  fields {
    field_path = "current"
    order      = "ASCENDING"
  }
  fields {
    field_path = "metadata.key"
    order      = "ASCENDING"
  }
}

# TTL policies: every run, event and approval document carries expire_at (creation + 7 days), rate permits
# (limits/{tool}/seconds/...) carry it too, and runs' metrics records (end + METRICS_RETENTION_DAYS), spend
# entries (LEDGER_RETENTION, a little over a month: the longest budget window), budget alert claims (two
# months), threads (THREAD_RETENTION after their last turn), and long-term memory's records, entities and
# relations (learned + the agent's MemoryPolicy.retention_days; without expire_at: kept until erased).
# Collection-group wide. TTL deletion lags (up to about a day); the runtime enforces expiry itself as well
# (a budget sums only its window, a thread past expire_at is not found), except memory: a record past its
# expire_at is still recalled until deleted. The expire_at fields are also exempted from single-field
# indexing (index_config {}): they are never queried, and a monotonically increasing indexed timestamp
# would be a write hotspot.
resource "google_firestore_field" "ttl" {
  for_each = toset(["runs", "events", "approvals", "seconds", "run_metrics", "spend", "budget_alerts", "threads", "live", "memories", "memory_entities", "memory_relations"])

  project    = var.project
  database   = google_firestore_database.main.name
  collection = each.key
  field      = "expire_at"

  ttl_config {}
  index_config {}
}

# Single-field index exemptions: large strings and maps (each leaf of a map is indexed) that are never
# queried. Saves index writes and keeps these fields clear of the 1500-byte index entry limit.
resource "google_firestore_field" "exempt" {
  for_each = {
    "events.events_json"              = { collection = "events", field = "events_json" }
    "runs.input"                      = { collection = "runs", field = "input" }
    "runs.result"                     = { collection = "runs", field = "result" }
    "runs.context"                    = { collection = "runs", field = "context" } # the thread's, as the run started
    "threads.context_json"            = { collection = "threads", field = "context_json" }
    "approvals.arguments_json"        = { collection = "approvals", field = "arguments_json" }
    "approvals.call_arguments_json"   = { collection = "approvals", field = "call_arguments_json" }
    "approvals.edited_arguments_json" = { collection = "approvals", field = "edited_arguments_json" }
    "approvals.late_result_json"      = { collection = "approvals", field = "late_result_json" }
    "run_metrics.models"              = { collection = "run_metrics", field = "models" }
    "run_metrics.tool_calls"          = { collection = "run_metrics", field = "tool_calls" }
    "run_metrics.tool_errors"         = { collection = "run_metrics", field = "tool_errors" }
    "run_metrics.guard_verdicts"      = { collection = "run_metrics", field = "guard_verdicts" }
    "run_metrics.watched"             = { collection = "run_metrics", field = "watched" }
    "run_metrics.scores"              = { collection = "run_metrics", field = "scores" }
    "drift_alerts.alert_json"         = { collection = "drift_alerts", field = "alert_json" }
    "agex_state.value"                = { collection = "agex_state", field = "value" }
    "degradations.sources"            = { collection = "degradations", field = "sources" }
    # long-term memory: the text, provenance and metadata are read back, never queried (metadata filters
    # are applied after the vector search), and the embedding is searched through the vector indexes
    # above alone. Exempting it is safe: an exemption governs the automatic single-field indexes only,
    # and a vector index is a composite index, which indexes a field whatever its exemption says; left
    # indexed, every write would also index a vector of up to 2048 numbers that no query orders by.
    "memories.text"            = { collection = "memories", field = "text" }
    "memories.source"          = { collection = "memories", field = "source" }
    "memories.metadata"        = { collection = "memories", field = "metadata" }
    "memories.embedding"       = { collection = "memories", field = "embedding" }
    "memory_entities.source"   = { collection = "memory_entities", field = "source" }
    "memory_entities.metadata" = { collection = "memory_entities", field = "metadata" }
    "memory_relations.source"  = { collection = "memory_relations", field = "source" }
  }

  project    = var.project
  database   = google_firestore_database.main.name
  collection = each.value.collection
  field      = each.value.field

  # An empty index_config disables every single-field index on the field.
  index_config {}
}
