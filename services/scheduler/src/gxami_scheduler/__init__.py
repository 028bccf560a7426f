"""gxami scheduler."""
