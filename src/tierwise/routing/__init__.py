"""tierwise.routing."""
