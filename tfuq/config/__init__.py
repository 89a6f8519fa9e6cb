"""tfuq.config."""
