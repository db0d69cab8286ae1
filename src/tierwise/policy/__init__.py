"""tierwise.policy."""
