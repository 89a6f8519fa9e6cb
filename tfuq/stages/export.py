"""``tfuq export CONFIG``: the trained model as a TF Serving version with in-graph MC uncertainty.

The steps of :func:`export`:

0. checks that write nothing: ``[EXPORT] export_dir`` (and its model
   folder) can be written (not a file, not under a file, writable; a folder
   outside model_dir, given as an absolute path, is logged), and the config
   does not contradict the model
   (:func:`tfuq.model_store.contract.check_matches_model`);
1. the trained network ``<model_dir>/model.keras`` (loaded with safe_mode
   on, :func:`tfuq.export.load_model`; a one-line error when there is none:
   run tfuq train first), or the weights of checkpoint
   ``[INFERENCE] inference_iter`` when that is set;
2. the target normalisation ``<model_dir>/normalisation.json`` when it
   exists (the SavedModel then answers in the target's units, e.g. HU), and
   the recalibration chosen by ``[CALIBRATION] method`` when ``tfuq
   calibrate`` stored it (:mod:`tfuq.calibration.stored`);
3. a SavedModel (:func:`tfuq.export.export_saved_model`) with
   T = ``[EXPORT] mc_samples`` (0: ``[UNCERTAINTY] mc_samples``) passes,
   dropout streams seeded by ``[SYSTEM] seed``, one input per MultiRes
   level, and in ``assets.extra/`` the resolved config (``config.ini``),
   ``normalisation.json``, ``calibration.json`` and ``tfuq_export.json``;
4. written as ``<[EXPORT] export_dir>/<[EXPORT] model_name>/<version>/``
   (the next free version unless one is given; an existing version is
   refused unless ``overwrite``) through a hidden staging folder, so a
   running TF Serving never sees a partial model and a killed export leaves
   no half version (its debris is cleaned up by the next export,
   :func:`tfuq.export.serving.recover_versions`); then
   ``<export_dir>/models.config`` lists every model there.
"""

from __future__ import annotations

import logging
from pathlib import Path

import keras

from tfuq.atomic import check_output_folder
from tfuq.calibration.moment_recalibration import MomentRecalibration
from tfuq.config import Config
from tfuq.config.paths import note_outside_model_dir
from tfuq.errors import UserError
from tfuq.export.archive import export_saved_model, input_names
from tfuq.export.serving import check_model_name, staged_version, write_models_config
from tfuq.model_store import MODEL_FILE, load_model
from tfuq.model_store.contract import check_matches_model
from tfuq.model_store.lock import model_dir_lock

__all__ = ["export"]

_LOG = logging.getLogger(__name__)


def _load_network(config: Config) -> keras.Model:
    """The network as ``tfuq infer`` runs it: checkpoint and ``[INFERENCE] precision`` (one answer)."""
    from tfuq.model_store.precision import resolve_precision, with_precision

    path = config.model_dir / MODEL_FILE
    if not path.is_file():
        raise UserError(f"no trained model in {config.model_dir}; run tfuq train first")
    if config.inference.inference_iter > 0:
        from tfuq.model_store.trained import load_trained_model

        model = load_trained_model(config.model_dir, config.inference.inference_iter).model
    else:
        model = load_model(path, compile=False)
    return with_precision(model, resolve_precision(config, config.model_dir))


def export(config: Config, *, version: int | None = None, overwrite: bool = False) -> Path:
    """:func:`_export` holding the model_dir's writer lock (:mod:`tfuq.model_store.lock`).

    Raises:
        UserError: another tfuq process is writing to the model_dir, or see :func:`_export`.
    """
    if not Path(config.model_dir).is_dir():  # the one-line "no trained model" comes from the body
        return _export(config, version=version, overwrite=overwrite)
    with model_dir_lock(config.model_dir, command=f"tfuq export {config.path}"):
        return _export(config, version=version, overwrite=overwrite)


def _export(config: Config, *, version: int | None = None, overwrite: bool = False) -> Path:
    """Export the trained model of ``config`` for TF Serving (see the module notes).

    Args:
        config: The loaded configuration.
        version: Version number >= 1; None (default) writes the next free one.
        overwrite: Replace an existing version. Default False.

    Returns:
        Path: the version folder written, ``<export_dir>/<model_name>/<version>``.

    Raises:
        UserError: an export folder that is a file or not writable, a config
            that contradicts the stored model, no trained model, broken
            normalisation or calibration files, an existing version without
            ``overwrite``, or a model that does not fit the configuration's family.
    """
    from tfuq.calibration.stored import load_calibration
    from tfuq.model_store import NORMALISATION_FILE, read_target_normalisation

    export_dir = Path(config.export.export_dir)
    check_output_folder(export_dir, "[EXPORT] export_dir")
    name = check_model_name(config.export.model_name)
    check_output_folder(export_dir / name, f"[EXPORT] export_dir: model {name!r}:")
    check_matches_model(config, "tfuq export")
    model = _load_network(config)
    units = read_target_normalisation(config.model_dir)
    recalibrator = load_calibration(config.model_dir, config.calibration.method)
    mc_samples = config.export.mc_samples or config.uncertainty.mc_samples
    net = config.network
    names = input_names(net.multires_factors if net.name == "multires" else None)
    assets = {"config.ini": config.to_ini()}
    if units is not None:
        assets[NORMALISATION_FILE] = (config.model_dir / NORMALISATION_FILE).read_text(encoding="utf-8")
    if recalibrator is not None:
        assets["calibration.json"] = recalibrator.to_json()
    note_outside_model_dir(export_dir, config.model_dir)
    with staged_version(export_dir, config.export.model_name, version, overwrite=overwrite) as (
        staging,
        final,
    ):
        try:
            export_saved_model(
                model,
                staging,
                family=config.family,
                mc_samples=mc_samples,
                names=names,
                recalibration=MomentRecalibration.from_recalibrator(recalibrator),
                units=None if units is None else (units.offset, units.scale),
                seed=config.system.seed,
                assets=assets,
            )
        except ValueError as error:
            raise UserError(f"{config.model_dir / MODEL_FILE}: cannot be exported: {error}") from None
    write_models_config(export_dir)
    _LOG.info(
        "exported %s (T = %d, %s units%s) to %s",
        config.export.model_name,
        mc_samples,
        "target" if units is not None else "normalised",
        f", {type(recalibrator).__name__}" if recalibrator is not None else "",
        final,
    )
    return final
