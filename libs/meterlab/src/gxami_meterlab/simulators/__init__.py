"""Deterministic meter simulators for tests and demos, one module per protocol."""
