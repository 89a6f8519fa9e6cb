"""UP-GAN's progressive training schedule: which stage a training iteration belongs to.

UP-GAN (Upadhyay et al. 2021, Sec. 3 "Progressive training scheme") first
trains phase 1 alone, then each later phase with the earlier generators
fixed, then fine-tunes all phases end to end with a smaller learning rate.
With M phases there are M + 1 stages: stage m < M trains phase m (0-based)
for ``phase_iterations[m]`` iterations; stage M fine-tunes everything for the
rest of the run. The stage is a pure function of the global iteration count,
so a resumed run continues in the right stage.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Sequence
from typing import Any

__all__ = ["ProgressiveSchedule"]


@dataclasses.dataclass(frozen=True)
class ProgressiveSchedule:
    """Iterations of each progressive phase; fine-tuning follows.

    Args:
        phase_iterations: Iterations of stages 0..M-1 (one per phase), each >= 0.

    Raises:
        ValueError: an empty tuple or a negative / non-integer entry.

    Example:
        >>> s = ProgressiveSchedule((100, 100, 100))
        >>> [s.stage_at(i) for i in (0, 99, 100, 299, 300, 10**6)]
        [0, 0, 1, 2, 3, 3]
    """

    phase_iterations: tuple[int, ...]

    def __post_init__(self) -> None:
        values = tuple(self.phase_iterations)
        if not values or any(isinstance(v, bool) or not isinstance(v, int) or v < 0 for v in values):
            raise ValueError(
                f"Expected one int >= 0 per phase. Received: phase_iterations={self.phase_iterations!r}"
            )
        object.__setattr__(self, "phase_iterations", values)

    @property
    def num_phases(self) -> int:
        """M, the number of phases (stage M is the fine-tuning)."""
        return len(self.phase_iterations)

    @property
    def boundaries(self) -> tuple[int, ...]:
        """Iteration at which each progressive stage ends (cumulative sums)."""
        return tuple(itertools.accumulate(self.phase_iterations))

    def stage_at(self, iteration: int) -> int:
        """Stage of 0-based ``iteration``: m < M trains phase m, M fine-tunes all."""
        for stage, end in enumerate(self.boundaries):
            if iteration < end:
                return stage
        return self.num_phases

    def finetune_iterations(self, max_iter: int) -> int:
        """Iterations left for the fine-tuning in a run of ``max_iter`` (>= 0)."""
        return max(int(max_iter) - self.boundaries[-1], 0)

    @classmethod
    def from_iterations(
        cls, num_phases: int, max_iter: int, phase_iter: Sequence[int] = ()
    ) -> ProgressiveSchedule:
        """Resolve ``[GAN] phase_iter`` for M phases and ``max_iter`` iterations.

        Args:
            num_phases: M >= 1.
            max_iter: Total iterations of the run.
            phase_iter: Empty (``max_iter`` split evenly over the M phases and
                the fine-tuning), one value for every phase, or M values.

        Raises:
            ValueError: a length other than 0, 1 or M, or phases longer than ``max_iter``.
        """
        values = tuple(int(v) for v in phase_iter)
        if not values:
            values = (max(int(max_iter) // (num_phases + 1), 1),) * num_phases
            return cls(values)
        if len(values) == 1:
            values = values * num_phases
        if len(values) != num_phases:
            raise ValueError(f"expected 1 or {num_phases} values (one per phase), got {len(values)}")
        if sum(values) > max_iter:
            raise ValueError(
                f"the phases take {sum(values)} iterations, more than [TRAINING] max_iter = {max_iter}"
            )
        return cls(values)

    @classmethod
    def from_config(cls, config: Any) -> ProgressiveSchedule:
        """The schedule of ``[NETWORK] num_phases``, ``[TRAINING] max_iter`` and ``[GAN] phase_iter``.

        Raises:
            ConfigError: a ``phase_iter`` that does not fit (one line).
        """
        from tfuq.config import ConfigError

        try:
            return cls.from_iterations(
                config.network.num_phases, config.training.max_iter, config.app.phase_iter
            )
        except ValueError as err:
            raise ConfigError(f"{config.path}: [GAN] phase_iter: {err}") from None
