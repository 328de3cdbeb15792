# The function source: one private bucket and one zip object, shared by the four functions (each picks its
# entry point). The zip is built here from the repository (data.archive_file below), or built elsewhere
# (Cloud Build: see docs/deploy.md) and named with var.source_object.

resource "google_storage_bucket" "source" {
  project  = var.project
  name     = "${var.project}-agex-source"
  location = var.region
  labels   = local.labels

  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = false

  versioning {
    enabled = true
  }

  # Old source zips are only needed for rollbacks: keep the 10 latest noncurrent versions, 90 days at most.
  lifecycle_rule {
    condition {
      num_newer_versions = 10
      with_state         = "ARCHIVED"
    }
    action {
      type = "Delete"
    }
  }
  lifecycle_rule {
    condition {
      days_since_noncurrent_time = 90
    }
    action {
      type = "Delete"
    }
  }

  depends_on = [google_project_service.apis]
}

locals {
  build_source = var.source_object == null

  # What the zip holds, as path in the zip => path on disk. Text files only (file() reads UTF-8):
  #   main.py, requirements.txt   the functions' entry points and dependencies (this module's src/)
  #   functions/*/main.py         the entry points main.py loads (one source of truth with the local stack)
  #   agex/**                     the library (shared/agex), at the root so `import agex` works
  #   {agent package}/**          the agents' code: var.agent_packages (default: examples, the samples)
  #   fleet.yaml                  the fleet file (AGEX_FLEET_FILE=fleet.yaml; main.py resolves it)
  source_files = merge(
    {
      "main.py"          = "${path.module}/src/main.py"
      "requirements.txt" = "${path.module}/src/requirements.txt"
      "fleet.yaml"       = var.fleet_file
    },
    { for f in fileset("${local.repo_root}/functions", "*/main.py") : "functions/${f}" => "${local.repo_root}/functions/${f}" },
    { for f in fileset("${local.repo_root}/shared", "agex/**/*.{py,json,yaml,pem,html,js,css,svg}") : f => "${local.repo_root}/shared/${f}" },
    merge([for pkg in var.agent_packages :
      { for f in fileset(local.repo_root, "${pkg}/**/*.{py,json,yaml}") : f => "${local.repo_root}/${f}" }
    ]...),
  )
}

data "archive_file" "source" {
  count = local.build_source ? 1 : 0

  type        = "zip"
  output_path = "${path.root}/.build/agex-functions.zip"

  dynamic "source" {
    for_each = local.source_files
    content {
      filename = source.key
      content  = file(source.value)
    }
  }
}

resource "google_storage_bucket_object" "source" {
  count = local.build_source ? 1 : 0

  # Named by content: a changed source is a new object, which redeploys the functions; old objects stay
  # for rollbacks.
  name         = "agex-functions-${data.archive_file.source[0].output_md5}.zip"
  bucket       = google_storage_bucket.source.name
  source       = data.archive_file.source[0].output_path
  content_type = "application/zip"
}
