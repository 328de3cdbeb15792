#!/usr/bin/env bash
# Check what `make` cannot install into the virtualenv: Python 3.11+, Java 17+ and the Google Cloud
# SDK's Firestore and Pub/Sub agex.dev.emulators. Say how to install what is missing.
set -u
fail=0
py=$(${PYTHON:-python3} -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null || echo 0)
case "$py" in 3.1[1-9]|3.[2-9][0-9]) ;; *) echo "need Python 3.11+ (found: $py)"; fail=1 ;; esac
if ! command -v java >/dev/null; then
  echo "need Java 17+ for the Firestore and Pub/Sub emulators: apt-get install openjdk-17-jre-headless"; fail=1
fi
sdk=$(gcloud info --format='value(installation.sdk_root)' 2>/dev/null || echo /usr/lib/google-cloud-sdk)
[ -f "$sdk/platform/cloud-firestore-emulator/cloud-firestore-emulator.jar" ] || {
  echo "need the Firestore emulator: apt-get install google-cloud-cli-firestore-emulator" \
       "(or: gcloud components install cloud-firestore-emulator)"; fail=1; }
[ -d "$sdk/platform/pubsub-emulator" ] || {
  echo "need the Pub/Sub emulator: apt-get install google-cloud-cli-pubsub-emulator" \
       "(or: gcloud components install pubsub-emulator)"; fail=1; }
exit $fail
