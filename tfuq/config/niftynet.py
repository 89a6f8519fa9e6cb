"""NiftyNet's configuration keys, translated into tfuq's before the sections are parsed.

A NiftyNet regression or GAN INI carries keys that tfuq has under another name
or in another section, keys whose NiftyNet value means "off", and keys for
features tfuq does not have. :data:`NIFTYNET_KEYS` is the table: one row per
NiftyNet key, in the section NiftyNet allows it, saying what it becomes in
tfuq. :func:`translate_niftynet` applies the table to the parsed INI text before
the loader validates the sections, so a NiftyNet file loads with its meaning:

- a mapping rewrites the key as tfuq's (``[SYSTEM] queue_length`` ->
  ``[NETWORK] queue_length``; ``[NETWORK] whitening = True`` ->
  ``intensity_normalisation = zscore`` in each network input section that does
  not choose its own);
- NiftyNet's "off" or default value of a feature tfuq does not have is a
  faithful no-op and is dropped (``normalisation = False`` with its
  ``histogram_ref_file``, ``norm_type`` and ``cutoff``; ``cuda_devices = ""``);
- any other value of such a key is refused in one line saying why and what to
  use: accepting a key and ignoring it is worse than refusing it.

Every translation is logged on ``tfuq.config.niftynet``: at INFO when it sets
a tfuq key, at DEBUG when the key is a no-op.

Reference:
    Gibson et al., "NiftyNet: a deep-learning platform for medical imaging",
    Comput. Methods Programs Biomed. 158, 2018; NiftyNet's ``config/README.md``
    (the configuration specification) and ``user_parameters_default.py``.
"""

from __future__ import annotations

import configparser
import dataclasses
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

from tfuq.config.errors import ConfigError
from tfuq.config.fields import ConfigValueError, FieldSpec, field_specs, parse_value
from tfuq.config.sections import APPLICATIONS, SECTIONS, TrainingSection

__all__ = ["INPUT", "NIFTYNET_KEYS", "NiftyNetKey", "translate_niftynet"]

_LOG = logging.getLogger(__name__)

#: :attr:`NiftyNetKey.section` of a key NiftyNet allows in every input source section.
INPUT = "<input>"
#: Application key naming the network input sections.
_INPUT_KEY = {"REGRESSION": "image", "GAN": "conditioning"}
#: NiftyNet regression losses tfuq implements -> tfuq's ``loss_type`` (and what differs).
_REGRESSION_LOSSES = {
    "L1Loss": ("l1", "mean absolute error, the same loss"),
    "MAE": ("l1", "mean absolute error, the same loss"),
    "L2Loss": ("l2", "NiftyNet halves the sum of squares, tfuq averages them: the same loss but a constant"),
    "RMSE": ("l2", "tfuq minimises the mean squared error, RMSE's square: the same minimiser"),
}
#: NiftyNet optimiser names that tfuq spells differently.
_OPTIMISERS = {"gradientdescent": "sgd"}

Action = Callable[["_Translation", str, str], None]


def _spec(
    kind: Any,
    *,
    choices: tuple[Any, ...] | None = None,
    min: float | None = None,
    max: float | None = None,
    min_exclusive: bool = False,
    length: int | None = None,
) -> FieldSpec:
    """How a NiftyNet value parses (tfuq's parser, so NiftyNet's ``(a, b)`` and ``True`` work)."""
    return FieldSpec(
        name="",
        type=kind,
        default=None,
        help="",
        choices=choices,
        min=min,
        max=max,
        min_exclusive=min_exclusive,
        max_exclusive=False,
        length=(length,) if length else None,
        path=None,
    )


_BOOL = _spec(bool)
_TEXT = _spec(str)
_INT = _spec(int)


def _unquote(text: str) -> str:
    """NiftyNet writes an empty string as ``""`` (e.g. ``cuda_devices = ""``)."""
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        return text[1:-1].strip()
    return text


def _tfuq_spec(section: str, key: str) -> FieldSpec:
    return field_specs({**SECTIONS, **APPLICATIONS}[section])[key]


@dataclasses.dataclass
class _Translation:
    """The INI being translated, the application, and the sections whitening set."""

    parser: configparser.ConfigParser
    application: str
    path: Path
    whitened: list[str] = dataclasses.field(default_factory=list)

    def text(self, section: str, key: str) -> str:
        return self.parser.get(section, key).strip()

    def value(self, section: str, key: str, spec: FieldSpec) -> Any:
        text = self.text(section, key)
        try:
            return parse_value(spec, _unquote(text) if spec.type is str else text)
        except ConfigValueError as err:
            raise ConfigError(f"{self.path}: [{section}] {key}: expected {err}, got {text!r}") from None

    def app_value(self, key: str) -> Any:
        """A key of the application section as tfuq parses it; empty when absent or invalid."""
        spec = _tfuq_spec(self.application, key)
        if not self.parser.has_option(self.application, key):
            return spec.default
        try:
            return parse_value(spec, self.text(self.application, key))
        except ConfigValueError:
            return spec.default  # the loader reports it with the rest of the section

    def inputs(self) -> tuple[str, ...]:
        """The network input sections: ``[REGRESSION] image`` or ``[GAN] conditioning``."""
        return self.app_value(_INPUT_KEY[self.application])

    def refuse(self, section: str, key: str, why: str) -> NoReturn:
        raise ConfigError(f"{self.path}: [{section}] {key} = {self.text(section, key)}: {why}")

    def drop(self, section: str, key: str, why: str) -> None:
        """A no-op value: log it and remove the key."""
        _LOG.debug("NiftyNet key [%s] %s = %s: no-op (%s)", section, key, self.text(section, key), why)
        self.parser.remove_option(section, key)

    def set(self, section: str, key: str, to_section: str, to_key: str, value: str, note: str = "") -> None:
        """Set ``[to_section] to_key = value`` as the meaning of ``[section] key``; log it at INFO."""
        _LOG.info(
            "NiftyNet key [%s] %s = %s -> [%s] %s = %s%s",
            section,
            key,
            self.text(section, key),
            to_section,
            to_key,
            value,
            f" ({note})" if note else "",
        )
        if not self.parser.has_section(to_section):
            self.parser.add_section(to_section)
        self.parser.set(to_section, to_key, value)

    def set_once(
        self, section: str, key: str, to_section: str, to_key: str, value: str, note: str = ""
    ) -> None:
        """:meth:`set` and remove ``[section] key``; refused when the file sets the tfuq key otherwise."""
        if self.parser.has_option(to_section, to_key):
            existing = self.text(to_section, to_key)
            spec = _tfuq_spec(to_section, to_key)
            try:
                same = parse_value(spec, existing) == parse_value(spec, value)
            except ConfigValueError:
                same = False
            if not same:
                self.refuse(
                    section,
                    key,
                    f"means [{to_section}] {to_key} = {value}, but the file sets {to_key} = {existing}; "
                    f"set it once, in [{to_section}]",
                )
            _LOG.debug("NiftyNet key [%s] %s agrees with [%s] %s", section, key, to_section, to_key)
        else:
            self.set(section, key, to_section, to_key, value, note)
        self.parser.remove_option(section, key)


def _noop(spec: FieldSpec, why: str, off: tuple[Any, ...] | None = None, refusal: str = "") -> Action:
    """A key whose ``off`` values (default: every valid value) do nothing in NiftyNet or tfuq alike."""

    def action(t: _Translation, section: str, key: str) -> None:
        value = t.value(section, key, spec)  # a valid NiftyNet value either way
        if off is None or value in off:
            t.drop(section, key, why)
        else:
            t.refuse(section, key, refusal)

    return action


def _move(to_section: str, to_key: str) -> Action:
    """A key NiftyNet reads in another section than tfuq (checked against tfuq's key)."""

    def action(t: _Translation, section: str, key: str) -> None:
        t.value(section, key, _tfuq_spec(to_section, to_key))
        t.set_once(section, key, to_section, to_key, t.text(section, key))

    return action


def _whitening(t: _Translation, section: str, key: str) -> None:
    """``whitening = True``: NiftyNet's per-volume ``(I - mean) / std`` of the network inputs."""
    if not t.value(section, key, _BOOL):
        t.drop(section, key, "NiftyNet's default: the inputs are not whitened")
        return
    for name in t.inputs():
        if not t.parser.has_section(name):
            continue  # the loader names the missing section
        if t.parser.has_option(name, "intensity_normalisation"):
            _LOG.debug("NiftyNet key [%s] %s: [%s] keeps its own intensity_normalisation", section, key, name)
            continue
        t.set(section, key, name, "intensity_normalisation", "zscore", "per subject, as NiftyNet")
        t.whitened.append(name)
    t.parser.remove_option(section, key)


def _foreground_only(t: _Translation, section: str, key: str) -> None:
    """``normalise_foreground_only``: tfuq's foreground is the application's mask section."""
    if not t.value(section, key, _BOOL):
        t.drop(section, key, "NiftyNet's default: statistics over the whole volume")
        return
    if not t.whitened:
        t.drop(section, key, "no section is whitened by [NETWORK] whitening, which it would restrict")
        return
    mask = t.app_value("mask")
    if not mask:
        t.refuse(
            section,
            key,
            "tfuq has no foreground_type (Otsu or threshold) foreground, it normalises inside a mask "
            f"section: name one in [{t.application}] mask, or set normalise_foreground_only = False",
        )
    for name in t.whitened:
        if t.parser.has_option(name, "normalise_foreground_only"):
            _LOG.debug("NiftyNet key [%s] %s: [%s] keeps its own value", section, key, name)
            continue
        note = f"foreground = the [{mask}] mask section, in place of NiftyNet's foreground_type"
        t.set(section, key, name, "normalise_foreground_only", "true", note)
    t.parser.remove_option(section, key)


def _keep_prob(t: _Translation, section: str, key: str) -> None:
    """``keep_prob``: NiftyNet's dropout keep probability is 1 - tfuq's drop probability."""
    keep = t.value(section, key, _spec(float, min=0.0, max=1.0, min_exclusive=True))
    if keep == 1.0:
        t.drop(section, key, "NiftyNet's default, no dropout; tfuq's MC dropout is set in [UNCERTAINTY]")
        return
    t.set_once(section, key, "UNCERTAINTY", "dropout_rate", repr(round(1.0 - keep, 12)), "drop = 1 - keep")


def _loss_type(t: _Translation, section: str, key: str) -> None:
    """``loss_type``: NiftyNet's regression losses tfuq implements, or the GAN's CrossEntropy."""
    text = t.text(section, key)
    if text in (field_specs(TrainingSection)["loss_type"].choices or ()):
        return  # tfuq's own value
    if t.application == "GAN":
        if text != "CrossEntropy":
            t.refuse(section, key, "a [GAN] takes NiftyNet's CrossEntropy (-> [GAN] adversarial_loss = bce)")
        note = "NiftyNet also smooths the real labels to 0.9; tfuq does not"
        t.set_once(section, key, "GAN", "adversarial_loss", "bce", note)
        return
    if text not in _REGRESSION_LOSSES:
        t.refuse(
            section,
            key,
            "tfuq has no such loss; expected nll, l1, l2, or NiftyNet's L1Loss or MAE (-> l1), "
            "L2Loss or RMSE (-> l2)",
        )
    value, note = _REGRESSION_LOSSES[text]
    t.set(section, key, section, key, value, note)


def _optimiser(t: _Translation, section: str, key: str) -> None:
    """``optimiser``: NiftyNet's names tfuq spells differently."""
    text = t.text(section, key)
    if text in _OPTIMISERS:
        t.set(section, key, section, key, _OPTIMISERS[text])


@dataclasses.dataclass(frozen=True)
class NiftyNetKey:
    """One NiftyNet key: the section NiftyNet allows it in and what tfuq makes of it.

    Attributes:
        section: ``SYSTEM``, ``NETWORK``, ``TRAINING``, ``REGRESSION``, ``GAN``,
            or :data:`INPUT` for every input source section.
        key: NiftyNet's key.
        meaning: One line: what it becomes in tfuq, or why it is refused.
        action: Applies it to the INI text (sets tfuq keys, drops it, or raises
            :class:`ConfigError`).
    """

    section: str
    key: str
    meaning: str
    action: Action = dataclasses.field(repr=False, compare=False)


_FOREGROUND_TYPES = ("otsu_plus", "otsu_minus", "threshold_plus", "threshold_minus", "mean", "mean_plus")
_HISTOGRAM = "used only by normalisation = True (histogram standardisation), which tfuq refuses"
#: The translation table, applied in this order (whitening before normalise_foreground_only).
NIFTYNET_KEYS: tuple[NiftyNetKey, ...] = (
    NiftyNetKey(
        "SYSTEM",
        "cuda_devices",
        'empty ("") accepted; any device list refused (set CUDA_VISIBLE_DEVICES in the environment)',
        _noop(
            _TEXT,
            "NiftyNet's default: the visible devices",
            off=("",),
            refusal="not supported; set CUDA_VISIBLE_DEVICES in the environment",
        ),
    ),
    NiftyNetKey("SYSTEM", "queue_length", "-> [NETWORK] queue_length", _move("NETWORK", "queue_length")),
    NiftyNetKey(
        "NETWORK",
        "normalisation",
        "False accepted (off); True refused: tfuq has no histogram standardisation",
        _noop(
            _BOOL,
            "NiftyNet's default: no histogram standardisation",
            off=(False,),
            refusal="tfuq has no histogram standardisation (Nyul); use whitening = True, or "
            "intensity_normalisation = zscore or percentile in the input sections",
        ),
    ),
    NiftyNetKey(
        "NETWORK", "histogram_ref_file", "accepted, no-op (" + _HISTOGRAM + ")", _noop(_TEXT, _HISTOGRAM)
    ),
    NiftyNetKey(
        "NETWORK",
        "norm_type",
        "accepted, no-op (" + _HISTOGRAM + ")",
        _noop(_spec(str, choices=("percentile", "quartile")), _HISTOGRAM),
    ),
    NiftyNetKey(
        "NETWORK",
        "cutoff",
        "accepted, no-op (" + _HISTOGRAM + "; tfuq's percentile cut-offs are each input section's cutoff)",
        _noop(_spec(tuple[float, ...], min=0.0, max=1.0, length=2), _HISTOGRAM),
    ),
    NiftyNetKey(
        "NETWORK",
        "whitening",
        "True -> intensity_normalisation = zscore in each network input section that does not set its own",
        _whitening,
    ),
    NiftyNetKey(
        "NETWORK",
        "normalise_foreground_only",
        "True (with whitening) -> normalise_foreground_only = true in the whitened sections when the "
        "application names a mask section (the foreground); refused without one",
        _foreground_only,
    ),
    NiftyNetKey(
        "NETWORK",
        "foreground_type",
        "accepted, no-op (off without normalise_foreground_only; replaced by the mask section with it)",
        _noop(
            _spec(str, choices=_FOREGROUND_TYPES),
            "NiftyNet's foreground; tfuq's is the application's mask section",
        ),
    ),
    NiftyNetKey(
        "NETWORK",
        "multimod_foreground_type",
        "accepted, no-op (tfuq's one mask section is every modality's foreground)",
        _noop(
            _spec(str, choices=("and", "or", "multi", "all")),
            "tfuq's one mask section is every modality's foreground",
        ),
    ),
    NiftyNetKey(
        "NETWORK",
        "keep_prob",
        "1 accepted (NiftyNet's default); p < 1 -> [UNCERTAINTY] dropout_rate = 1 - p",
        _keep_prob,
    ),
    NiftyNetKey(
        "NETWORK",
        "smaller_final_batch_mode",
        "pad or dynamic accepted (tfuq predicts every window; same output); drop refused",
        _noop(
            _spec(str, choices=("pad", "drop", "dynamic")),
            "tfuq predicts every window; the output is the same",
            off=("pad", "dynamic"),
            refusal="not supported: tfuq predicts every window of a volume (drop would leave the last ones "
            "unpredicted); use pad or dynamic",
        ),
    ),
    NiftyNetKey(
        "TRAINING",
        "loss_type",
        "[REGRESSION] L1Loss, MAE -> l1; L2Loss, RMSE -> l2; others refused. [GAN] CrossEntropy -> "
        "[GAN] adversarial_loss = bce",
        _loss_type,
    ),
    NiftyNetKey("TRAINING", "optimiser", "gradientdescent -> sgd", _optimiser),
    NiftyNetKey(
        "REGRESSION",
        "error_map",
        "False accepted; True refused (tfuq evaluate draws |error| montages and scores the errors)",
        _noop(
            _BOOL,
            "NiftyNet's default: no error maps",
            off=(False,),
            refusal="not supported: tfuq writes no error maps at inference; tfuq evaluate scores the "
            "errors against the target and draws |error| montages",
        ),
    ),
    NiftyNetKey(
        "REGRESSION",
        "weight",
        "empty accepted; a section refused (tfuq's losses take a mask section: [REGRESSION] mask)",
        _noop(
            _TEXT,
            "no loss weight map",
            off=("",),
            refusal="not supported: tfuq's losses take no weight map; name a mask section in [REGRESSION] "
            "mask to restrict the loss (or sampler for weighted window sampling)",
        ),
    ),
    NiftyNetKey(
        "GAN",
        "noise_size",
        "-1 accepted (NiftyNet's default); a size refused (tfuq's conditional GANs take no noise vector)",
        _noop(
            _INT,
            "NiftyNet's default: no noise vector",
            off=(-1,),
            refusal="not supported: tfuq's conditional GANs take no noise vector (dropout is their "
            "randomness, as pix2pix); remove it",
        ),
    ),
    NiftyNetKey(
        "GAN",
        "n_interpolations",
        "10 accepted (NiftyNet's default); others refused (tfuq's GANs have no noise to interpolate)",
        _noop(
            _INT,
            "NiftyNet's default; it interpolates noise vectors, which tfuq's GANs do not have",
            off=(10,),
            refusal="not supported: tfuq's conditional GANs have no noise vector to interpolate; remove it",
        ),
    ),
    NiftyNetKey(
        INPUT,
        "loader",
        "empty or nibabel accepted (tfuq reads NIfTI with nibabel); other loaders refused",
        _noop(
            _TEXT,
            "tfuq reads NIfTI with nibabel",
            off=("", "nibabel"),
            refusal="not supported: tfuq reads NIfTI with nibabel only; set loader = nibabel or remove it",
        ),
    ),
)


def translate_niftynet(parser: configparser.ConfigParser, application: str, path: Path) -> None:
    r"""Rewrite NiftyNet's keys of ``parser`` into tfuq's, in place (:data:`NIFTYNET_KEYS`).

    Args:
        parser: The INI text (overrides already applied); changed in place.
        application: ``"REGRESSION"`` or ``"GAN"`` (the file's application section).
        path: The INI file, for error messages.

    Raises:
        ConfigError: a NiftyNet value tfuq cannot honour, or one conflicting with
            the tfuq key it maps to; one line naming the section, the key and
            what to use instead.

    Example:
        >>> parser = configparser.ConfigParser()
        >>> parser.read_string("[SYSTEM]\nqueue_length = 8\n[REGRESSION]\nimage = MR\n")
        >>> translate_niftynet(parser, "REGRESSION", Path("app.ini"))
        >>> parser.get("NETWORK", "queue_length")
        '8'
    """
    translation = _Translation(parser, application, path)
    reserved = {*SECTIONS, *APPLICATIONS}
    for row in NIFTYNET_KEYS:
        if row.section == INPUT:
            sections = [name for name in parser.sections() if name not in reserved]
        else:
            sections = [row.section] if parser.has_section(row.section) else []
        for section in sections:
            if parser.has_option(section, row.key):
                row.action(translation, section, row.key)
