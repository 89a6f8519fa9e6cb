"""tfuq.data."""
