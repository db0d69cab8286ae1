"""tierwise.evaluation."""
