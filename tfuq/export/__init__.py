"""tfuq.export."""
