"""Experiments that validate uncertainty: shift checks of the reliability flag."""

from tfuq.experiments.shift import SHIFTS, estimate_noise_std, shift_auroc, shifted_input

__all__ = ["SHIFTS", "estimate_noise_std", "shift_auroc", "shifted_input"]
