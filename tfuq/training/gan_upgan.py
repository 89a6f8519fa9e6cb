"""UP-GAN training: M cascaded GANs, progressive initialisation, then end-to-end fine-tuning.

:class:`UPGANTrainer` trains an :class:`~tfuq.networks.UPGAN` cascade with one
unconditional PatchGAN discriminator per phase (``D_m`` judges phase m's
mean image). Per phase the generator loss is UP-GAN eq. 2,
``lambda1 L_alpha_beta + lambda2 L_adv`` (GGD NLL, eq. 1, and LSGAN;
lambda1 = 1, lambda2 = 0.001), plus L1 and concrete-dropout KL when their
weights are set (:mod:`tfuq.training.gan_losses`).

Stages (:class:`~tfuq.training.gan_schedule.ProgressiveSchedule`, a function
of the trainer's ``gan_step``):

- stage m < M: phase m and ``D_m`` are trained; phases 0..m-1 run frozen
  and in inference mode (``training=False``: BatchNorm uses and keeps its
  moving statistics, dropout is off) outside the gradient tapes; later phases
  are not run.
- stage M: all phases and discriminators are trained end to end on the
  combined losses of every phase (gradients flow through the
  uncertainty-attention inputs into earlier phases), with the fine-tuning
  optimisers (built by :func:`~tfuq.training.gan.build_gan_trainer` at
  ``[GAN] finetune_lr_factor`` times the learning rates). The combination is
  the mean over the phases (the paper's sum divided by M: the same Adam
  steps, and logs on the scale of one phase).

``generator_optimizer`` and ``discriminator_optimizer`` are lists of M + 1
optimisers, one per stage (``optimizer``, which Keras and the CSV log's
``lr`` column read, is the first phase's). Each stage has its own compiled
train function: ``fit``'s ``train_function`` reads the stage before every
call and traces a stage's function the first time it is needed (with
``steps_per_execution`` k > 1 a stage may run up to k - 1 steps past its
end). Logs report the terms of the phases trained in the current stage
(validation: the same phases in inference mode, selected in-graph so one
traced test function serves every stage), ``stage`` and, in training,
``stage_lr`` (the current generator optimiser's learning rate).

Reference:
    Upadhyay et al., "Uncertainty-guided progressive GANs for medical image
    translation", MICCAI 2021, arXiv:2106.15542 (Sec. 3, eq. 1-4).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import keras
import tensorflow as tf

from tfuq.losses import split_target
from tfuq.networks import uncertainty_attention
from tfuq.training.gan_base import GanTrainerBase, replica_fraction
from tfuq.training.gan_losses import (
    D_LOSS,
    G_TOTAL,
    LossWeights,
    discriminator_loss,
    generator_loss,
    generator_terms,
)
from tfuq.training.gan_schedule import ProgressiveSchedule

__all__ = ["STAGE", "STAGE_LR", "UPGANTrainer"]

#: Log key of the current stage (0..M-1 progressive phases, M fine-tuning).
STAGE = "stage"
#: Log key of the learning rate of the current stage's generator optimiser (Keras'
#: ``optimizer``, which the CSV log's ``lr`` column reads, is the first phase's).
STAGE_LR = "stage_lr"


@keras.saving.register_keras_serializable(package="tfuq")
class UPGANTrainer(GanTrainerBase):
    """UP-GAN trainer with the progressive schedule (a ``keras.Model`` for ``fit``).

    Args:
        generator: Built cascade with ``generators`` (one model per phase),
            e.g. :class:`~tfuq.networks.UPGAN`.
        discriminators: One discriminator per phase, ``image (B, *spatial, 1) -> scores``.
        phase_iterations: Iterations of each progressive phase (M values);
            fine-tuning follows.
        family: Head family; default ``generator.family`` (generalized_normal).
        adversarial_loss: ``"lsgan"`` (UP-GAN) or ``"bce"``.
        loss_weights: Default UP-GAN's ``adv = 0.001`` (lambda2),
            ``nll = 1`` (lambda1), ``l1 = 0``, ``kl = 100``.
        loss_border: Voxels ignored at each window side for L1 and NLL.
        grad_clip_norm: Clip each stage's gradients to this global norm; 0 = off.
        **kwargs: Base ``keras.Model`` arguments.

    Attributes:
        generator: The cascade (its output, the last phase's parameters, is
            what inference uses); ``generator.generators`` the phases.
        discriminators: The M discriminators.
        schedule: The :class:`ProgressiveSchedule`.
        generator_optimizer, discriminator_optimizer: Lists of M + 1
            optimisers (stage order), set by :meth:`compile`.
        gan_step: Completed training steps (int64 weight, checkpointed).

    Raises:
        ValueError: a generator without phases, a discriminator count other
            than M, or a schedule of another length.

    Example:
        >>> trainer = UPGANTrainer(UPGAN((32, 32, 1), base_filters=4, depth=2),
        ...     [PatchDiscriminator((32, 32, 1)) for _ in range(3)], (50, 50, 50))  # doctest: +SKIP
    """

    _stacked_optimizers = True
    _default_loss_weights = LossWeights(adv=0.001, l1=0.0, nll=1.0, kl=100.0)

    def __init__(
        self,
        generator: keras.Model,
        discriminators: Sequence[keras.Model],
        phase_iterations: Sequence[int],
        family: str | None = None,
        adversarial_loss: str = "lsgan",
        loss_weights: LossWeights | Mapping[str, float] | None = None,
        loss_border: int = 0,
        grad_clip_norm: float = 0.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            generator,
            family=family,
            adversarial_loss=adversarial_loss,
            loss_weights=loss_weights,
            loss_border=loss_border,
            grad_clip_norm=grad_clip_norm,
            **kwargs,
        )
        phases = list(getattr(generator, "generators", None) or [])
        if not phases:
            raise ValueError(
                "Expected a cascade with a `generators` list (tfuq.networks.UPGAN). "
                f"Received: generator={generator.name!r}"
            )
        discriminators = list(discriminators)
        if len(discriminators) != len(phases):
            raise ValueError(
                f"Expected one discriminator per phase ({len(phases)}). Received: {len(discriminators)}"
            )
        schedule = ProgressiveSchedule(tuple(phase_iterations))
        if schedule.num_phases != len(phases):
            raise ValueError(
                f"Expected one entry per phase ({len(phases)}). "
                f"Received: phase_iterations={phase_iterations!r}"
            )
        self.discriminators = discriminators
        for m, disc in enumerate(discriminators):  # checkpoints track attributes, not lists
            setattr(self, f"discriminator_{m}", disc)
        self.schedule = schedule
        self.built = True

    @property
    def num_phases(self) -> int:
        """M, the number of cascaded phases."""
        return self.schedule.num_phases

    @property
    def phases(self) -> list[keras.Model]:
        """The phase generators, first to last."""
        return list(self.generator.generators)

    @property
    def current_stage(self) -> int:
        """Stage of the next training step (read eagerly, also while tracing)."""
        with tf.init_scope():
            step = int(keras.ops.convert_to_numpy(self.gan_step))
        return self.schedule.stage_at(step)

    def _stage_tensor(self) -> tf.Tensor:
        """The stage of ``gan_step`` as an int64 tensor, computed in the graph."""
        boundaries = tf.constant(self.schedule.boundaries, tf.int64)
        step = tf.reshape(tf.cast(self.gan_step, tf.int64), [1])
        return tf.searchsorted(boundaries, step, side="right", out_type=tf.int64)[0]

    def _trained(self, stage: int) -> list[int]:
        return list(range(self.num_phases)) if stage == self.num_phases else [stage]

    def _optimizer_variables(self) -> tuple[list[list[Any]], list[list[Any]]]:
        g = [p.trainable_variables for p in self.phases]
        d = [disc.trainable_variables for disc in self.discriminators]
        return [*g, [v for vs in g for v in vs]], [*d, [v for vs in d for v in vs]]

    def _stage_variables(self, stage: int) -> tuple[list[Any], list[Any]]:
        trained = self._trained(stage)
        g = [v for m in trained for v in self.phases[m].trainable_variables]
        d = [v for m in trained for v in self.discriminators[m].trainable_variables]
        return g, d

    # -- forward -----------------------------------------------------------------------------------

    def _phase_input(self, x: Any, previous: list[tf.Tensor]) -> Any:
        return uncertainty_attention(self.family, previous[-1], x) if previous else x

    def _frozen_params(self, x: Any, count: int) -> list[tf.Tensor]:
        """Outputs of the first ``count`` phases in inference mode, as constants."""
        params: list[tf.Tensor] = []
        for m in range(count):
            out = self.phases[m](self._phase_input(x, params), training=False)
            params.append(tf.stop_gradient(tf.cast(out, tf.float32)))
        return params

    def _run_phases(self, x: Any, params: list[tf.Tensor], last: int, training: bool) -> list[tf.Tensor]:
        """Append the outputs of phases ``len(params)..last`` to ``params``."""
        for m in range(len(params), last + 1):
            out = self.phases[m](self._phase_input(x, params), training=training)
            params.append(tf.cast(out, tf.float32))
        return params

    def _phase_terms(self, m: int, params: tf.Tensor, target: tf.Tensor, mask: Any, training: bool) -> dict:
        """Generator terms and discriminator loss of phase m (``D_m`` on its mean and on the target)."""
        disc = self.discriminators[m]
        fake = disc(params[..., :1], training=training)
        real = disc(target[..., None], training=training)
        terms = generator_terms(
            self.family,
            params,
            target,
            fake,
            mask=mask,
            adversarial=self.adversarial_loss,
            border=self.loss_border,
            regularization=self.phases[m].losses,
        )
        terms[D_LOSS] = discriminator_loss(self.adversarial_loss, real, fake)
        return terms

    @staticmethod
    def _combine(per_phase: list[dict], weights: Any) -> dict[str, tf.Tensor]:
        return {
            key: tf.add_n([w * terms[key] for w, terms in zip(weights, per_phase)]) for key in per_phase[0]
        }

    def _targets(self, y: Any, params: tf.Tensor) -> tuple[tf.Tensor, Any]:
        target, mask = split_target(y, params.shape.rank)
        return tf.cast(target, tf.float32), mask

    # -- steps -------------------------------------------------------------------------------------

    def train_step(self, data: Any) -> dict[str, tf.Tensor]:
        """One update of the current stage's generator(s) and discriminator(s); returns this step's terms."""
        x, y, _ = keras.utils.unpack_x_y_sample_weight(data)
        stage = self.current_stage
        trained = self._trained(stage)
        g_opt, d_opt = self.generator_optimizer[stage], self.discriminator_optimizer[stage]
        g_vars, d_vars = self._stage_variables(stage)
        check = tf.debugging.assert_equal(  # a step traced once and reused past its stage fails here
            self._stage_tensor(),
            tf.constant(stage, tf.int64),
            message=f"UPGANTrainer: a train step traced for stage {stage} ran in another stage; run it "
            "through trainer.make_train_function() (one traced function per stage)",
        )
        with tf.control_dependencies([check] if check is not None else []):  # before any update
            frozen = self._frozen_params(x, trained[0])
            with tf.GradientTape() as g_tape, tf.GradientTape() as d_tape:
                params = self._run_phases(x, list(frozen), trained[-1], training=True)
                target, mask = self._targets(y, params[0])
                per_phase = [self._phase_terms(m, params[m], target, mask, training=True) for m in trained]
                values = self._combine(per_phase, [1.0 / len(trained)] * len(trained))
                values[G_TOTAL] = generator_loss(values, self.loss_weights)
                g_scaled = g_opt.scale_loss(replica_fraction(values[G_TOTAL]))
                d_scaled = d_opt.scale_loss(replica_fraction(values[D_LOSS]))
            self._apply_both((g_opt, g_tape, g_scaled, g_vars), (d_opt, d_tape, d_scaled, d_vars))
            self.gan_step.assign_add(1)
            learning_rate = tf.cast(g_opt.learning_rate, tf.float32)
            return {**self._record(values), STAGE: tf.constant(float(stage)), STAGE_LR: learning_rate}

    def test_step(self, data: Any) -> dict[str, tf.Tensor]:
        """The current stage's terms in inference mode (validation), no update; running means."""
        x, y, _ = keras.utils.unpack_x_y_sample_weight(data)
        params = self._run_phases(x, [], self.num_phases - 1, training=False)
        target, mask = self._targets(y, params[0])
        per_phase = [self._phase_terms(m, p, target, mask, training=False) for m, p in enumerate(params)]
        stage = self._stage_tensor()
        weights = tf.where(
            stage < self.num_phases,
            tf.one_hot(stage, self.num_phases, dtype=tf.float32),
            tf.fill([self.num_phases], 1.0 / self.num_phases),
        )
        values = self._combine(per_phase, tf.unstack(weights))
        values[G_TOTAL] = generator_loss(values, self.loss_weights)
        self._record_validation(values, y)
        return {**self._results(), STAGE: tf.cast(stage, tf.float32)}

    def make_train_function(self, force: bool = False) -> Any:
        """A train function that runs (and first traces) the current stage's step."""
        if self.train_function is not None and not force:
            return self.train_function
        functions: dict[int, Any] = {}

        def train_function(iterator: Any) -> Any:
            stage = self.current_stage
            if stage not in functions:
                keras.Model.make_train_function(self, force=True)  # sets self.train_function
                functions[stage] = self.train_function
                self.train_function = train_function
            return functions[stage](iterator)

        self.train_function = train_function
        return train_function

    # -- serialisation -----------------------------------------------------------------------------

    def get_config(self) -> dict[str, Any]:
        """Every constructor argument (networks serialised)."""
        return {
            **super().get_config(),
            "discriminators": [keras.saving.serialize_keras_object(d) for d in self.discriminators],
            "phase_iterations": list(self.schedule.phase_iterations),
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> UPGANTrainer:
        """Rebuild from :meth:`get_config`."""
        return cls(**cls._deserialize(config, "generator", "discriminators"))
