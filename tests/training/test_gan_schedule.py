"""UP-GAN progressive schedule: stages of iterations, resolution of [GAN] phase_iter."""

from __future__ import annotations

from pathlib import Path

import pytest

from tfuq.config import ConfigError, load_config
from tfuq.training.gan_schedule import ProgressiveSchedule

REPO = Path(__file__).resolve().parents[2]


def test_stage_of_every_iteration() -> None:
    schedule = ProgressiveSchedule((3, 1, 2))
    stages = [schedule.stage_at(i) for i in range(9)]
    assert stages == [0, 0, 0, 1, 2, 2, 3, 3, 3]
    assert schedule.boundaries == (3, 4, 6) and schedule.num_phases == 3
    assert schedule.finetune_iterations(10) == 4 and schedule.finetune_iterations(5) == 0


def test_a_phase_of_zero_iterations_is_skipped() -> None:
    schedule = ProgressiveSchedule((2, 0, 1))
    assert [schedule.stage_at(i) for i in range(4)] == [0, 0, 2, 3]


@pytest.mark.parametrize(
    ("phase_iter", "expected"),
    [((), (25, 25, 25)), ((10,), (10, 10, 10)), ((5, 10, 20), (5, 10, 20))],
)
def test_phase_iter_resolution(phase_iter: tuple[int, ...], expected: tuple[int, ...]) -> None:
    assert ProgressiveSchedule.from_iterations(3, 100, phase_iter).phase_iterations == expected


@pytest.mark.parametrize(
    ("phase_iter", "message"), [((1, 2), "1 or 3 values"), ((40, 40, 40), "more than .* max_iter = 100")]
)
def test_phase_iter_that_does_not_fit_is_refused(phase_iter: tuple[int, ...], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ProgressiveSchedule.from_iterations(3, 100, phase_iter)


@pytest.mark.parametrize("bad", [(), (-1, 2), (1.5,), (True,)])
def test_bad_schedules_are_refused(bad: tuple) -> None:
    with pytest.raises(ValueError, match="one int >= 0 per phase"):
        ProgressiveSchedule(bad)


def test_from_config_is_one_line_config_error(tmp_path: Path) -> None:
    demo = REPO / "configs" / "demo_upgan.ini"
    config = load_config(demo, [f"SYSTEM.model_dir={tmp_path}"])
    schedule = ProgressiveSchedule.from_config(config)
    assert schedule.phase_iterations == (60, 60, 60)
    assert schedule.finetune_iterations(config.training.max_iter) == 120
    with pytest.raises(ConfigError, match=r"demo_upgan.ini: \[GAN\] phase_iter: the phases take 900"):
        ProgressiveSchedule.from_config(load_config(demo, ["GAN.phase_iter=300"]))
