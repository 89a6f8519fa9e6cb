"""tfuq.distributions."""
