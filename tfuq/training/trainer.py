"""The regression trainer: a network, its per-voxel loss and its regularisers, for ``fit``.

:class:`RegressionTrainer` wraps a network built by
:func:`tfuq.networks.build_model` so that Keras ``fit`` trains it on
``(inputs, targets)`` batches of :func:`tfuq.data.pipeline.make_training_dataset`
(targets carry ``[target, mask]`` channels) and reports every loss term of
every step, not only their running mean:

- the data term: the per-voxel NLL of the ``[UNCERTAINTY] family``
  (:class:`~tfuq.losses.NLLLoss`), or L1/L2 (``[TRAINING] loss_type``, and
  the ``none`` family), masked;
- ``dropout_kl``: the concrete-dropout regularisers the network's layers add
  (``network.losses``, Gal et al. 2017; Zhao eq. 4-6);
- ``weight_penalty``: ``[NETWORK] decay`` times the L2 (or L1) norm of every
  convolution kernel (NiftyNet's ``decay`` / ``reg_type``).

``loss`` is their sum. Under a ``tf.distribute`` strategy each replica
averages over its share of the global batch and its gradient is divided by
the number of replicas, so the summed gradient equals the gradient of the
global-batch mean. Gradient clipping (``grad_clip_norm``) acts on that summed
gradient (Keras' own ``global_clipnorm`` would clip each replica's part).
Under ``mixed_float16`` the optimiser is a ``LossScaleOptimizer``: the loss is
scaled before differentiation and the clipping threshold with it.
"""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

from tfuq.training.replica_means import batch_windows, record_window_means

__all__ = ["DROPOUT_KL", "LOSS", "WEIGHT_PENALTY", "RegressionTrainer"]

#: Names of the reported terms (the data term is named by its loss: nll, l1 or l2).
LOSS = "loss"
DROPOUT_KL = "dropout_kl"
WEIGHT_PENALTY = "weight_penalty"


@keras.saving.register_keras_serializable(package="tfuq")
class RegressionTrainer(keras.Model):
    """Train ``network`` with a per-voxel loss plus its regularisers (see the module notes).

    Args:
        network: A Keras model mapping inputs to head parameters ``(B, *spatial, P)``.
        loss: A Keras loss taking ``y_true = [target, mask]`` channels
            (:class:`~tfuq.losses.NLLLoss`, :class:`~tfuq.losses.L1Loss`, ...);
            its ``call`` gives one value per sample, averaged here over the
            (per-replica) batch; its ``name`` names the data term in the logs.
        decay: Weight penalty factor >= 0 on convolution kernels. Default 0.
        reg_type: ``"L2"`` (sum of squares) or ``"L1"`` (sum of absolute values).
        grad_clip_norm: Clip the global gradient norm to this; 0 = off.
        **kwargs: Base model arguments (``name``).

    Raises:
        ValueError: a negative ``decay`` or ``grad_clip_norm``, or an unknown ``reg_type``.

    Example:
        >>> trainer = RegressionTrainer(build_model(config), NLLLoss("normal"))  # doctest: +SKIP
        >>> trainer.compile(optimizer=keras.optimizers.Adam(1e-3))  # doctest: +SKIP
        >>> trainer.fit(dataset, steps_per_epoch=100)  # doctest: +SKIP
    """

    def __init__(
        self,
        network: keras.Model,
        loss: keras.losses.Loss,
        *,
        decay: float = 0.0,
        reg_type: str = "L2",
        grad_clip_norm: float = 0.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if not decay >= 0:
            raise ValueError(f"Expected decay >= 0. Received: decay={decay}")
        if reg_type not in ("L1", "L2"):
            raise ValueError(f"Expected reg_type 'L1' or 'L2'. Received: reg_type={reg_type!r}")
        if not grad_clip_norm >= 0:
            raise ValueError(f"Expected grad_clip_norm >= 0. Received: grad_clip_norm={grad_clip_norm}")
        self.network = network
        self.voxel_loss = loss
        self.decay = float(decay)
        self.reg_type = reg_type
        self.grad_clip_norm = float(grad_clip_norm)
        self.term_names = (LOSS, loss.name, DROPOUT_KL, WEIGHT_PENALTY)
        self.trackers = [keras.metrics.Mean(name=name) for name in self.term_names]
        # The network is built and the trainer has no weights of its own: marking it built stops
        # ``fit`` from drawing a batch to build it symbolically (which would start the window
        # stream a second time and shift it).
        self.built = bool(network.built)

    @property
    def metrics(self) -> list[keras.metrics.Metric]:
        """Running means of every term (reset by Keras at each epoch and evaluation)."""
        return list(self.trackers)

    def call(self, inputs: Any, training: bool | None = None) -> Any:
        """The network's output."""
        return self.network(inputs, training=training)

    def loss_terms(self, x: Any, y: Any, training: bool) -> dict[str, tf.Tensor]:
        """Every term for one batch, float32 scalars keyed by :attr:`term_names`."""
        params = tf.cast(self.network(x, training=training), tf.float32)
        # Loss.call gives per-sample values; Loss.__call__ would also divide by the replica count
        data = tf.reduce_mean(tf.cast(self.voxel_loss.call(y, params), tf.float32))
        extra = [tf.cast(v, tf.float32) for v in self.network.losses]
        kl = tf.add_n(extra) if extra else tf.constant(0.0)
        penalty = tf.constant(0.0)
        if self.decay:
            kernels = [v for v in self.network.trainable_weights if v.path.endswith("kernel")]
            norm = tf.square if self.reg_type == "L2" else tf.abs
            penalty = self.decay * tf.add_n([tf.reduce_sum(norm(tf.cast(k, tf.float32))) for k in kernels])
        return dict(zip(self.term_names, (data + kl + penalty, data, kl, penalty)))

    def _update_trackers(self, terms: dict[str, tf.Tensor]) -> None:
        for tracker in self.trackers:
            tracker.update_state(terms[tracker.name])

    def train_step(self, data: Any) -> dict[str, tf.Tensor]:
        """One optimiser step on a (per-replica) batch; returns this step's terms."""
        x, y = data[0], data[1]
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        variables = self.network.trainable_variables
        with tf.GradientTape() as tape:
            terms = self.loss_terms(x, y, training=True)
            scaled = self.optimizer.scale_loss(terms[LOSS] / replicas)
        grads = tape.gradient(scaled, variables)
        if self.grad_clip_norm:
            grads = self._clip(grads, replicas)
        self.optimizer.apply_gradients(zip(grads, variables))
        self._update_trackers(terms)
        return terms

    def _clip(self, grads: list[Any], replicas: int) -> list[Any]:
        if replicas > 1:  # clip the global gradient, then hand each replica its share back
            grads = tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM, grads)
        loss_scale = tf.cast(self.optimizer.scale_loss(tf.constant(1.0)), tf.float32)
        grads, _ = tf.clip_by_global_norm(grads, self.grad_clip_norm * loss_scale)
        return [g / replicas for g in grads] if replicas > 1 else grads

    def test_step(self, data: Any) -> dict[str, tf.Tensor]:
        """Terms of a validation batch; the trackers average them over the evaluation's windows.

        Under several replicas the trackers get the global batch's means
        (:func:`~tfuq.training.replica_means.record_window_means`), so the
        result is the one-device value whichever replica reports it.
        """
        x, y = data[0], data[1]
        trackers = {tracker.name: tracker for tracker in self.trackers}
        record_window_means(trackers, self.loss_terms(x, y, training=False), batch_windows(y))
        return {tracker.name: tracker.result() for tracker in self.trackers}

    def get_config(self) -> dict[str, Any]:
        """Return every constructor argument (network and loss serialised)."""
        return {
            "name": self.name,
            "network": keras.saving.serialize_keras_object(self.network),
            "loss": keras.saving.serialize_keras_object(self.voxel_loss),
            "decay": self.decay,
            "reg_type": self.reg_type,
            "grad_clip_norm": self.grad_clip_norm,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> RegressionTrainer:
        """Rebuild from :meth:`get_config`."""
        config = dict(config)
        network = keras.saving.deserialize_keras_object(config.pop("network"))
        loss = keras.saving.deserialize_keras_object(config.pop("loss"))
        return cls(network, loss, **config)
