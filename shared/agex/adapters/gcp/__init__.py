"""Google Cloud adapters of the ports: the only package that imports ``google.cloud`` and ``google.genai``.
Import the module you need (``agex.adapters.gcp.firestore_store``, ``...cloud_tasks``, ``...pubsub_bus``,
``...gemini``, ``...oidc``, ``...secret_manager``); none is loaded by this package."""
