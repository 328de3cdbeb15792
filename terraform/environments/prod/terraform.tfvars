# prod: replace the project, tenants, invokers and the notification channel with yours.
project = "agex-prod-example"
region  = "europe-west1"

tenants      = "*@example.com=acme"
api_invokers = ["group:agex-users@example.com"]

firestore_delete_protection = true

functions = {
  api       = { min_instances = 1, max_instances = 20 }
  step      = { max_instances = 100 }
  approvals = { max_instances = 10 }
  drift     = { max_instances = 1 }
}

# gcloud beta monitoring channels list --project agex-prod-example
alert_channels = ["projects/agex-prod-example/notificationChannels/REPLACE_WITH_CHANNEL_ID"]

labels = { env = "prod" }
