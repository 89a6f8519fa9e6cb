"""Write a SavedModel with in-graph MC uncertainty (``keras.export.ExportArchive``).

The SavedModel answers in any process that has TensorFlow alone (no Keras,
no tfuq, no Python code of ours): the T stochastic passes, the streaming
decomposition, the recalibration and the return to the target's units are
all traced into its graph. Its signatures (all with method name
``tensorflow/serving/predict``):

``serving_default``
    inputs ``windows`` ``(B, *window, C)`` float32 (plus ``windows_x2``,
    ``windows_x4``, ... for MultiRes: the co-centred coarser levels, see
    :mod:`tfuq.data.windows.multires`), already normalised as at training;
    outputs ``mean``, ``epistemic_std``, ``aleatoric_std``, ``total_std``
    ``(B, *window)`` from T passes (T fixed at export), recalibrated when a
    recalibration was given (then also ``lower95``, ``upper95``), plus
    ``alpha`` and ``beta`` for the generalized normal; in the target's units
    when its normalisation was given (see :mod:`tfuq.export.mc_graph`).
``predict_mc``
    the same with one more input, ``mc_samples`` (int32 scalar), overriding T.
``predict_params``
    one deterministic pass (dropout off): ``params`` (raw head channels)
    and the constrained ``loc``, ``scale`` (, ``power``).

The graph is the one the MC engine compiles: BatchNormalization folded into
the convolutions (:mod:`tfuq.inference.folding`) and, when the network has a
deterministic prefix (:mod:`tfuq.inference.prefix`, e.g. dropout only
before the head), the prefix computed once per request and only the
stochastic suffix run in each of the T passes.

MC sampling is a layer attribute read when a function is traced
(:mod:`tfuq.layers.mc_sampling`), so each endpoint is traced explicitly
under the setting it needs before the archive is written. The dropout seed
generators are variables of the SavedModel: every request continues their
streams (fresh masks), and with ``seed`` the first request after loading
replays the masks of :func:`tfuq.inference.seeded_generators` with that
seed. Files given as ``assets`` (config, normalisation, calibration) and a
``tfuq_export.json`` description go to ``assets.extra/``, the SavedModel
folder for files that accompany a model without being read by its graph.

Reference:
    Keras ``ExportArchive``; SavedModel format and ``assets.extra``:
    https://www.tensorflow.org/guide/saved_model.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import keras
import tensorflow as tf

from tfuq.calibration.moment_recalibration import MomentRecalibration
from tfuq.checks import check_int
from tfuq.distributions import check_family, params_size
from tfuq.export.mc_graph import ALPHA, BETA, LOWER, UPPER, Units, mc_maps, param_maps
from tfuq.inference.folding import fold_batch_norm
from tfuq.inference.mc import seeded_generators
from tfuq.inference.outputs import OUTPUT_MAPS
from tfuq.inference.prefix import split_at_stochastic
from tfuq.layers import mc_sampling, stochastic_layers
from tfuq.networks.outputs import head_params
from tfuq.typing import PathLike

__all__ = [
    "ASSETS_EXTRA",
    "EXPORT_METADATA",
    "MC_SAMPLES_INPUT",
    "PREDICT_MC",
    "PREDICT_PARAMS",
    "SERVING_DEFAULT",
    "WINDOWS",
    "export_saved_model",
    "input_names",
    "output_names",
]

#: Signature keys.
SERVING_DEFAULT = "serving_default"
PREDICT_MC = "predict_mc"
PREDICT_PARAMS = "predict_params"
#: Name of the (finest) window input, and of the T override of ``predict_mc``.
WINDOWS = "windows"
MC_SAMPLES_INPUT = "mc_samples"
#: SavedModel sub-folder for accompanying files, and the description written there.
ASSETS_EXTRA = "assets.extra"
EXPORT_METADATA = "tfuq_export.json"


def input_names(factors: Sequence[int] | None = None) -> list[str]:
    """Signature input names: ``windows`` then ``windows_x<f>`` per coarser MultiRes level.

    Example:
        >>> input_names(), input_names((1, 2, 4))
        (['windows'], ['windows', 'windows_x2', 'windows_x4'])
    """
    if not factors:
        return [WINDOWS]
    return [WINDOWS, *(f"{WINDOWS}_x{int(f)}" for f in tuple(factors)[1:])]


def output_names(family: str, recalibrated: bool) -> list[str]:
    """Output names of ``serving_default`` for a family, with or without recalibration."""
    names = list(OUTPUT_MAPS)
    if recalibrated:
        names += [LOWER, UPPER]
    if check_family(family) == "generalized_normal":
        names += [ALPHA, BETA]
    return names


def _check_model(model: keras.Model, family: str, names: Sequence[str]) -> list[tf.TensorSpec]:
    """Input specs of ``model``, after checking that it maps windows to head channels."""
    inputs = list(getattr(model, "inputs", None) or [])
    if not inputs:
        raise ValueError("Expected a built Keras model with known inputs. Received: a model without inputs")
    if len(names) != len(inputs):
        raise ValueError(
            f"Expected one input name per model input ({len(inputs)}). Received: input_names={list(names)}"
        )
    shapes = [tuple(x.shape) for x in inputs]
    for shape in shapes:
        if len(shape) not in (4, 5) or any(n is None for n in shape[1:]):
            raise ValueError(
                f"Expected 2D or 3D image inputs (B, *spatial, C) of known size. Received: shapes {shapes}"
            )
    outputs = head_params(_symbolic_outputs(model))
    expected = (*shapes[0][1:-1], params_size(family))
    if tuple(outputs.shape[1:]) != expected:
        raise ValueError(
            f"Expected the model to map windows {shapes[0][1:-1]} to {params_size(family)} {family!r} "
            f"head channels, i.e. outputs (B, {', '.join(map(str, expected))}). "
            f"Received: outputs of shape {tuple(outputs.shape)}"
        )
    return [tf.TensorSpec((None, *s[1:]), tf.float32, name=n) for s, n in zip(shapes, names)]


def _symbolic_outputs(model: keras.Model) -> Any:
    return model.output


def export_saved_model(
    model: keras.Model,
    path: PathLike,
    *,
    family: str,
    mc_samples: int,
    names: Sequence[str] | None = None,
    recalibration: MomentRecalibration | None = None,
    units: Units = None,
    seed: int | None = None,
    assets: Mapping[str, str] | None = None,
) -> Path:
    """Write ``model`` as a SavedModel whose signatures compute MC uncertainty in-graph.

    Args:
        model: Built Keras model mapping input window(s) ``(B, *window, C)``
            to head channels ``(B, *window, params_size(family))`` (or a
            dict with ``"params"`` / a list ending with them).
        path: Folder to write (must be absent or empty).
        family: The head's family.
        mc_samples: T of ``serving_default``, ``>= 1``.
        names: Signature input names, one per model input; default
            :func:`input_names` for one input (``["windows"]``).
        recalibration: Constants from
            :meth:`MomentRecalibration.from_recalibrator`; None = none.
        units: ``(offset, scale)`` of the target's normalisation to answer in
            target units; None keeps normalised units.
        seed: Seed the dropout streams start from (see
            :func:`tfuq.inference.seeded_generators`); None keeps the
            model's current generator states.
        assets: File name -> text written to ``assets.extra/``.

    Returns:
        Path: ``path``.

    Raises:
        ValueError: a model that does not map windows to ``family`` head
            channels, bad ``mc_samples``, a non-empty ``path``.

    Example:
        >>> export_saved_model(model, "export/mr2ct/1", family="normal",
        ...                    mc_samples=20, units=(-1024.0, 4095.0))  # doctest: +SKIP
    """
    family = check_family(family)
    check_int(mc_samples, "mc_samples", minimum=1)
    out = Path(path)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"Expected an absent or empty folder to export into. Received: path={str(out)!r}")
    recalibration = recalibration or MomentRecalibration()
    names = list(names) if names is not None else input_names()
    specs = _check_model(model, family, names)
    single = len(specs) == 1

    graph = fold_batch_norm(model)  # the engine's inference graph: BN folded, the same variables
    split = split_at_stochastic(graph)

    def forward(inputs: Sequence[tf.Tensor]) -> tf.Tensor:
        outputs = graph(inputs[0] if single else list(inputs), training=False)
        return tf.cast(head_params(outputs), tf.float32)

    def maps(inputs: Sequence[tf.Tensor], samples: Any) -> dict[str, tf.Tensor]:
        shape = tf.shape(inputs[0])[:-1]
        # the deterministic prefix once, the stochastic suffix in every pass (the whole graph without one)
        features = None if split is None else split[0](inputs[0] if single else list(inputs), training=False)

        def sample() -> tf.Tensor:
            if features is None:
                return forward(inputs)
            return tf.cast(head_params(split[1](features, training=False)), tf.float32)

        return mc_maps(sample, family, samples, shape, recalibration=recalibration, units=units)

    serve = tf.function(lambda *x: maps(x, mc_samples), input_signature=specs, autograph=False)
    serve_t = tf.function(
        lambda *x: maps(x[:-1], x[-1]),
        input_signature=[*specs, tf.TensorSpec((), tf.int32, name=MC_SAMPLES_INPUT)],
        autograph=False,
    )
    params = tf.function(
        lambda *x: param_maps(forward(x), family, units=units), input_signature=specs, autograph=False
    )
    with mc_sampling(model, True):
        serve.get_concrete_function()
        serve_t.get_concrete_function()
    with mc_sampling(model, False):
        params.get_concrete_function()
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(SERVING_DEFAULT, serve)
    archive.add_endpoint(PREDICT_MC, serve_t)
    archive.add_endpoint(PREDICT_PARAMS, params)
    with seeded_generators(model, seed):
        archive.write_out(str(out), verbose=False)
    metadata = {
        "family": family,
        "mc_samples": mc_samples,
        "seed": seed,
        "stochastic_layers": len(stochastic_layers(model)),
        "inputs": {spec.name: [None, *spec.shape[1:]] for spec in specs},
        "outputs": {
            SERVING_DEFAULT: output_names(family, recalibration.has_interval),
            PREDICT_PARAMS: sorted(params.get_concrete_function().structured_outputs),
        },
        "signatures": [SERVING_DEFAULT, PREDICT_MC, PREDICT_PARAMS],
        "units": "normalised" if units is None else {"offset": float(units[0]), "scale": float(units[1])},
        "recalibration": recalibration.to_dict(),
    }
    extra = out / ASSETS_EXTRA
    extra.mkdir(exist_ok=True)
    for name, text in {**dict(assets or {}), EXPORT_METADATA: json.dumps(metadata, indent=2)}.items():
        (extra / name).write_text(text if text.endswith("\n") else text + "\n", encoding="utf-8")
    return out
