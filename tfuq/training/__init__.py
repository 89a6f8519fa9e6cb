"""tfuq.training."""
