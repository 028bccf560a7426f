"""gxami cli."""
