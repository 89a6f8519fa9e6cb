"""Optimisers and schedules from [TRAINING]: kinds, hyper-parameters, schedule formulas, AdamW decay."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from tfuq.config import TrainingSection

keras = pytest.importorskip("keras")

from tfuq.training.optimizers import build_optimizer, build_schedule, learning_rate_at  # noqa: E402


@pytest.mark.parametrize(
    ("kind", "cls", "attrs"),
    [
        ("adam", "Adam", {"beta_1": 0.8, "beta_2": 0.95}),
        ("adamw", "AdamW", {"beta_1": 0.8, "beta_2": 0.95, "weight_decay": 1e-6}),
        ("sgd", "SGD", {"momentum": 0.0, "nesterov": False}),
        ("momentum", "SGD", {"momentum": 0.7, "nesterov": False}),
        ("nesterov", "SGD", {"momentum": 0.7, "nesterov": True}),
        ("rmsprop", "RMSprop", {}),
        ("adagrad", "Adagrad", {}),
    ],
)
def test_each_optimiser_gets_its_settings(kind: str, cls: str, attrs: dict[str, object]) -> None:
    training = TrainingSection(
        optimiser=kind,
        lr=0.02,
        beta_1=0.8,
        beta_2=0.95,
        momentum=0.7,
        weight_decay=1e-6 if kind == "adamw" else 0.0,
    )
    opt = build_optimizer(training)
    assert type(opt).__name__ == cls
    assert float(opt.learning_rate) == pytest.approx(0.02)
    for name, value in attrs.items():
        assert getattr(opt, name) == pytest.approx(value), name
    assert opt.global_clipnorm is None


def test_weight_decay_belongs_to_adamw_and_clipping_is_optional() -> None:
    with pytest.raises(ValueError, match="weight_decay is the decoupled decay of adamw"):
        build_optimizer(TrainingSection(optimiser="adam", weight_decay=0.1))
    training = TrainingSection(grad_clip_norm=2.5)
    assert build_optimizer(training).global_clipnorm == 2.5
    assert build_optimizer(training, clip=False).global_clipnorm is None
    assert float(build_optimizer(training, learning_rate=0.5).learning_rate) == 0.5


def test_cosine_and_step_schedules_follow_their_formulas() -> None:
    cosine = build_schedule(TrainingSection(lr=0.1, lr_schedule="cosine", max_iter=100))
    for t in (0, 10, 50, 99, 100):
        expected = 0.5 * 0.1 * (1 + math.cos(math.pi * t / 100))
        assert learning_rate_at(cosine, t) == pytest.approx(expected, rel=1e-5, abs=1e-7)  # float32 cos
    step = build_schedule(TrainingSection(lr=0.1, lr_schedule="step", lr_step_every_n=10, lr_step_factor=0.5))
    for t in (0, 9, 10, 19, 20, 35):
        assert learning_rate_at(step, t) == pytest.approx(0.1 * 0.5 ** (t // 10), rel=1e-6)
    default_every = build_schedule(TrainingSection(lr=1.0, lr_schedule="step", max_iter=30))
    assert learning_rate_at(default_every, 9) == 1.0 and learning_rate_at(default_every, 10) == pytest.approx(
        0.1
    )
    assert learning_rate_at(build_schedule(TrainingSection(lr=0.3)), 1000) == pytest.approx(0.3)
    with pytest.raises(ValueError, match="learning rate > 0"):
        build_schedule(TrainingSection(), learning_rate=0.0)
    with pytest.raises(ValueError, match="lr_schedule"):
        build_schedule(dataclasses.replace(TrainingSection(), lr_schedule="linear"))


def test_adamw_decay_is_decoupled_from_the_gradient() -> None:
    """Zero gradient: Adam's step is 0, so AdamW only shrinks w <- w (1 - lr wd) (Loshchilov & Hutter)."""
    lr, wd = 0.01, 0.5
    opt = build_optimizer(TrainingSection(optimiser="adamw", lr=lr, weight_decay=wd))
    w = keras.Variable(np.array([1.0, -2.0, 3.0], "float32"))
    opt.apply_gradients([(keras.ops.zeros((3,)), w)])
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(w), np.array([1.0, -2.0, 3.0]) * (1 - lr * wd), rtol=1e-6
    )
    plain = build_optimizer(TrainingSection(optimiser="adam", lr=lr))
    v = keras.Variable(np.array([1.0, -2.0, 3.0], "float32"))
    plain.apply_gradients([(keras.ops.zeros((3,)), v)])
    np.testing.assert_allclose(keras.ops.convert_to_numpy(v), [1.0, -2.0, 3.0])
