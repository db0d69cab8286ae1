"""tierwise.providers."""
