"""gxami reports."""
