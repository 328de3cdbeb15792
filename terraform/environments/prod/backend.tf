# State in a GCS bucket created once per organisation or project (docs/deploy.md, "Bootstrap"). The bucket
# is given at init, never committed: terraform init -backend-config=bucket=YOUR_STATE_BUCKET
terraform {
  backend "gcs" {
    bucket = ""
    prefix = "agex/prod"
  }
}
