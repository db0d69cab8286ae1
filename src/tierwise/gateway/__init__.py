"""tierwise.gateway."""
