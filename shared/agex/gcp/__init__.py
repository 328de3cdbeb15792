"""Google Cloud adapters of the ports: the only package that imports ``google.cloud`` and
``google.genai``. Import the module you need (``agex.gcp.firestore_store``, ``agex.gcp.cloud_tasks``,
``agex.gcp.pubsub_bus``, ``agex.gcp.gemini``, ``agex.gcp.oidc``); none is loaded by this package."""
