"""tfuq.inference."""
