"""tierwise.testing."""
