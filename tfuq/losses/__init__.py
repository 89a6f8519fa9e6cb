"""tfuq.losses."""
