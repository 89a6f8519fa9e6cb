"""Experiments that validate uncertainty, on top of the stages.

- ``tfuq validate-uq`` (:mod:`~tfuq.experiments.validate_uq`, its figures in
  :mod:`~tfuq.experiments.validate_uq_report`): Reinhold et al.'s checks
  (training-set size, input noise, anomaly) and the phantom's known noise;
- ``tfuq shift-check`` (:mod:`~tfuq.experiments.shift_check`,
  :mod:`~tfuq.experiments.shift`): does the reliability flag fire on shifted
  inputs.
"""

from tfuq.experiments.shift import SHIFTS, estimate_noise_std, shift_auroc, shifted_input

__all__ = ["SHIFTS", "estimate_noise_std", "shift_auroc", "shifted_input"]
