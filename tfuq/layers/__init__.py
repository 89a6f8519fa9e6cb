"""tfuq.layers."""
