"""tfuq.networks."""
