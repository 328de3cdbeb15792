"""Our emulators of the Google services that have no official one (Cloud Tasks, Secret Manager, the Gemini
API), small servers the unmodified client libraries talk to, and the launcher of the SDK's Firestore and
Pub/Sub emulators (``gcloud``)."""
