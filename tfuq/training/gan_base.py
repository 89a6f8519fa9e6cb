"""Shared body of the GAN trainers: optimisers per network, loss trackers, replica scaling.

A GAN trainer is a ``keras.Model`` that owns a generator and its
discriminator(s); ``fit`` drives its ``train_step``, which updates both with
their own optimisers (``generator_optimizer``, ``discriminator_optimizer``,
attributes a ``tf.train.Checkpoint`` of the trainer tracks). ``call`` is the
generator's, so ``predict`` and export see the generator alone (also exposed
as ``.generator``).

Logs (:attr:`GanTrainerBase.term_names`): ``loss`` (= ``g_total``, what
Keras callbacks watch), ``g_total``, ``g_adv``, ``g_l1``, ``g_nll`` (families
with a likelihood), ``g_kl`` and ``d_loss``: the unweighted terms and the
weighted generator loss (:mod:`tfuq.training.gan_losses`). ``train_step``
returns this step's values; ``test_step`` returns running means over the
evaluation (the trackers Keras resets).

Distribution: under a ``tf.distribute`` strategy each replica's losses are
divided by the number of replicas before differentiation (the optimiser sums
the replicas' gradients), so a step follows the mean over the global batch;
``grad_clip_norm`` clips that summed gradient (not each replica's part).
Mixed precision: with a ``mixed_float16`` policy the optimisers are wrapped
in ``keras.optimizers.LossScaleOptimizer``; losses are computed in float32.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import keras
import tensorflow as tf

from tfuq.distributions import check_family
from tfuq.losses.reduction import check_border
from tfuq.training.gan_losses import (
    D_LOSS,
    G_ADV,
    G_KL,
    G_L1,
    G_NLL,
    G_TOTAL,
    LOSS,
    LossWeights,
    check_adversarial,
)
from tfuq.training.replica_means import batch_windows, record_window_means

__all__ = ["GanTrainerBase", "default_gan_optimizer", "replica_fraction"]

#: Keras ``compile`` arguments a GAN trainer sets itself.
_RESERVED_COMPILE_ARGS = ("optimizer", "loss", "loss_weights", "metrics", "weighted_metrics")


def default_gan_optimizer(name: str) -> keras.optimizers.Optimizer:
    """pix2pix's and Zhao's optimiser: Adam, learning rate 2e-4, beta_1 0.5, beta_2 0.999."""
    return keras.optimizers.Adam(learning_rate=2e-4, beta_1=0.5, beta_2=0.999, name=name)


def replica_fraction(loss: tf.Tensor) -> tf.Tensor:
    """``loss / num_replicas_in_sync`` of the current strategy (``loss`` without one)."""
    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    return loss if replicas == 1 else loss * (1.0 / replicas)


class GanTrainerBase(keras.Model):
    """Base of :class:`~tfuq.training.gan.GANTrainer` and :class:`~tfuq.training.gan_upgan.UPGANTrainer`.

    Subclasses define ``train_step``/``test_step`` and the variables each
    optimiser updates (:meth:`_optimizer_variables`, one list per
    optimiser: a single one, or one per training stage when
    ``_stacked_optimizers``).

    Args:
        generator: The generator (a built ``keras.Model`` whose output are
            head parameters, channel 0 the generated image).
        family: Family of the generator's head; default the generator's
            ``family`` attribute.
        adversarial_loss: ``"lsgan"`` or ``"bce"``.
        loss_weights: :class:`LossWeights` or its dict.
        loss_border: Voxels ignored at each window side for L1 and NLL.
        grad_clip_norm: Clip each network's (replica-summed) gradient to this
            global norm; 0 = off.
        **kwargs: Base ``keras.Model`` arguments (``name``, ...).

    Raises:
        ValueError: a bad argument.
    """

    _stacked_optimizers = False
    _default_loss_weights = LossWeights()

    def __init__(
        self,
        generator: keras.Model,
        family: str | None = None,
        adversarial_loss: str = "lsgan",
        loss_weights: LossWeights | Mapping[str, float] | None = None,
        loss_border: int = 0,
        grad_clip_norm: float = 0.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if not isinstance(generator, keras.Model) or not generator.built:
            raise ValueError(f"Expected a built keras.Model generator. Received: generator={generator!r}")
        family = getattr(generator, "family", None) if family is None else family
        if family is None:
            raise ValueError("The generator has no `family` attribute. Expected family=... Received: None")
        self.generator = generator
        self.family = check_family(family)
        self.adversarial_loss = check_adversarial(adversarial_loss)
        weights = self._default_loss_weights if loss_weights is None else loss_weights
        self.loss_weights = LossWeights.from_value(weights)
        self.loss_border = check_border(loss_border)
        if (
            isinstance(grad_clip_norm, bool)
            or not isinstance(grad_clip_norm, (int, float))
            or grad_clip_norm < 0
        ):
            raise ValueError(f"Expected grad_clip_norm >= 0. Received: grad_clip_norm={grad_clip_norm!r}")
        self.grad_clip_norm = float(grad_clip_norm)
        self.gan_step = self.add_weight(
            name="gan_step",
            shape=(),
            dtype="int64",
            initializer="zeros",
            trainable=False,
            aggregation="only_first_replica",
        )
        names = (LOSS, G_TOTAL, G_ADV, G_L1, *([G_NLL] if self.family != "point" else []), G_KL, D_LOSS)
        self.term_names = names
        self.loss_trackers = {name: keras.metrics.Mean(name=name) for name in names}
        self.generator_optimizer: Any = None
        self.discriminator_optimizer: Any = None

    # -- compile ---------------------------------------------------------------------------------

    def _optimizer_variables(self) -> tuple[list[list[Any]], list[list[Any]]]:
        """Variables of each generator and each discriminator optimiser."""
        raise NotImplementedError

    def _prepare(self, value: Any, variable_sets: list[list[Any]], role: str) -> list[Any]:
        count = len(variable_sets)
        if value is None:
            suffixes = [""] if count == 1 else [f"_{k}" for k in range(count)]
            value = [default_gan_optimizer(f"{role}{s}") for s in suffixes]
        elif isinstance(value, (str, keras.optimizers.Optimizer)) or not isinstance(value, Sequence):
            value = [value]
        value = [keras.optimizers.get(v) for v in value]
        if len(value) != count:
            raise ValueError(
                f"Expected {count} optimizer(s) for {role} (one per training stage). Received: {len(value)}"
            )
        out = []
        for optimizer, variables in zip(value, variable_sets):
            if self.dtype_policy.name == "mixed_float16" and not isinstance(
                optimizer, keras.optimizers.LossScaleOptimizer
            ):
                optimizer = keras.optimizers.LossScaleOptimizer(optimizer, name=f"{optimizer.name}_scaled")
            if not optimizer.built:
                optimizer.build(variables)
            out.append(optimizer)
        return out

    def compile(
        self,
        generator_optimizer: Any = None,
        discriminator_optimizer: Any = None,
        **kwargs: Any,
    ) -> None:
        """Set (and build) the optimisers; other arguments go to ``keras.Model.compile``.

        Args:
            generator_optimizer: An optimiser (or, for a staged trainer, one per
                stage); default Adam(2e-4, beta_1=0.5) (pix2pix, Zhao).
            discriminator_optimizer: Same for the discriminator(s).
            **kwargs: ``run_eagerly``, ``jit_compile``, ``steps_per_execution``.

        Raises:
            ValueError: ``optimizer``/``loss``/``metrics`` arguments (the trainer
                defines its losses) or the wrong number of optimisers.
        """
        reserved = [k for k in _RESERVED_COMPILE_ARGS if k in kwargs]
        if reserved:
            raise ValueError(
                "A GAN trainer defines its own losses and optimisers. Expected generator_optimizer and "
                f"discriminator_optimizer. Received: {', '.join(reserved)}"
            )
        g_vars, d_vars = self._optimizer_variables()
        generators = self._prepare(generator_optimizer, g_vars, "generator_optimizer")
        discriminators = self._prepare(discriminator_optimizer, d_vars, "discriminator_optimizer")
        super().compile(optimizer=generators[0], auto_scale_loss=False, **kwargs)
        if self._stacked_optimizers:
            self.generator_optimizer, self.discriminator_optimizer = generators, discriminators
            # One attribute per optimiser as well: checkpoints track attributes, not lists.
            for k, (g, d) in enumerate(zip(generators, discriminators)):
                setattr(self, f"generator_optimizer_stage_{k}", g)
                setattr(self, f"discriminator_optimizer_stage_{k}", d)
        else:
            self.generator_optimizer, self.discriminator_optimizer = generators[0], discriminators[0]

    # -- steps -------------------------------------------------------------------------------------

    @property
    def metrics(self) -> list[keras.metrics.Metric]:
        """Running means of every term (reset by Keras at each epoch and evaluation)."""
        return list(self.loss_trackers.values())

    def _record(self, values: Mapping[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        """Update the trackers; return this step's values keyed by :attr:`term_names`."""
        values = {**values, LOSS: values[G_TOTAL]}
        for name, tracker in self.loss_trackers.items():
            tracker.update_state(values[name])
        return {name: values[name] for name in self.term_names}

    def _record_validation(self, values: Mapping[str, tf.Tensor], targets: Any) -> None:
        """Update the trackers with a validation batch's values, as means over the global batch's windows."""
        values = {**values, LOSS: values[G_TOTAL]}
        record_window_means(self.loss_trackers, values, batch_windows(targets))

    def _results(self) -> dict[str, tf.Tensor]:
        return {name: tracker.result() for name, tracker in self.loss_trackers.items()}

    def _apply(
        self, optimizer: Any, tape: tf.GradientTape, scaled_loss: tf.Tensor, variables: list[Any]
    ) -> None:
        gradients = tape.gradient(scaled_loss, variables)
        if self.grad_clip_norm:
            replicas = tf.distribute.get_strategy().num_replicas_in_sync
            if replicas > 1:  # clip the global (summed) gradient, hand each replica its share back
                gradients = tf.distribute.get_replica_context().all_reduce(
                    tf.distribute.ReduceOp.SUM, gradients
                )
            loss_scale = tf.cast(optimizer.scale_loss(tf.constant(1.0)), tf.float32)
            gradients, _ = tf.clip_by_global_norm(gradients, self.grad_clip_norm * loss_scale)
            if replicas > 1:
                gradients = [g / replicas for g in gradients]
        optimizer.apply_gradients(zip(gradients, variables))

    def _apply_both(self, generator: tuple, discriminator: tuple) -> None:
        """Apply ``(optimizer, tape, scaled_loss, variables)`` of the generator, then of the discriminator.

        Under a multi-replica strategy every replica must run its gradient
        all-reduces in the same order: the discriminator's update waits for
        the generator's (nothing else orders the two in a traced step).
        """
        self._apply(*generator)
        with tf.control_dependencies([tf.identity(generator[0].iterations)]):
            self._apply(*discriminator)

    def call(self, inputs: Any, training: bool | None = None) -> Any:
        """The generator's output (head parameters)."""
        return self.generator(inputs, training=training)

    def compute_output_shape(self, input_shape: Any) -> Any:
        """The generator's output shape."""
        return self.generator.compute_output_shape(input_shape)

    # -- serialisation -----------------------------------------------------------------------------

    def get_config(self) -> dict[str, Any]:
        """Every constructor argument (networks serialised)."""
        return {
            "generator": keras.saving.serialize_keras_object(self.generator),
            "family": self.family,
            "adversarial_loss": self.adversarial_loss,
            "loss_weights": self.loss_weights.to_dict(),
            "loss_border": self.loss_border,
            "grad_clip_norm": self.grad_clip_norm,
            "name": self.name,
            "trainable": self.trainable,
        }

    @staticmethod
    def _deserialize(config: dict[str, Any], *keys: str) -> dict[str, Any]:
        config = dict(config)
        for key in keys:
            value = config[key]
            if isinstance(value, list):
                config[key] = [keras.saving.deserialize_keras_object(v) for v in value]
            else:
                config[key] = keras.saving.deserialize_keras_object(value)
        return config
