"""Implementations of the ports: in memory (``inmemory``), on Google Cloud (``gcp``), and file-armed
failpoints. Each depends only on ``agex.ports`` and ``agex.core``."""
