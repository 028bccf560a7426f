"""gxami collector."""
