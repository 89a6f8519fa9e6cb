"""tfuq.calibration."""
