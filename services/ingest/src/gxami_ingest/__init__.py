"""gxami ingest."""
