"""The application: settings, the composition root (``runtime``), the fleet file and the HTTP handlers of
the functions. The only layer that chooses adapters."""
