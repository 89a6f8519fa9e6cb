"""tfuq.evaluation."""
