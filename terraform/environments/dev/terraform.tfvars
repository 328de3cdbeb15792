# dev: a small, cheap environment. Replace the project, tenants and invokers with yours.
project = "agex-dev-example"
region  = "us-central1"

tenants      = "*@example.com=dev"
api_invokers = ["group:agex-dev-users@example.com"]

# dev may be torn down.
firestore_delete_protection = false

functions = {
  api       = { max_instances = 3 }
  step      = { max_instances = 5 }
  approvals = { max_instances = 2 }
  drift     = { max_instances = 1 }
}

alert_channels = []

labels = { env = "dev" }
