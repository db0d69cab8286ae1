"""tierwise.pricing."""
