"""Load an INI file into a frozen :class:`Config`, validating every key.

Every problem a user can make (missing file, unknown section or key, wrong
type, out-of-range value, a section the application names but the file lacks)
is a :class:`ConfigError` whose message is one line naming the file, the
section, the key, what was expected and, for typos, the closest valid name.
"""

from __future__ import annotations

import configparser
import dataclasses
import difflib
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from tfuq.config.errors import ConfigError
from tfuq.config.fields import ConfigValueError, field_specs, format_value, parse_value
from tfuq.config.niftynet import translate_niftynet
from tfuq.config.paths import check_contained_outputs
from tfuq.config.sections import (
    APPLICATIONS,
    NETWORKS,
    SECTIONS,
    CalibrationSection,
    EvaluationSection,
    ExportSection,
    GanSection,
    InferenceSection,
    InputSource,
    NetworkSection,
    PhantomSection,
    RegressionSection,
    SystemSection,
    TrainingSection,
    UncertaintySection,
)
from tfuq.typing import PathLike

__all__ = ["PHANTOM_PREFIX", "Config", "ConfigError", "load_config", "parse_overrides"]

#: ``path_to_search`` value selecting the built-in phantom.
PHANTOM_PREFIX = "phantom:"
_SOURCE_KEYS = {
    "REGRESSION": ("image", "output", "sampler", "mask", "noise_std", "lesion"),
    "GAN": ("conditioning", "image", "mask", "noise_std", "lesion"),
}


@dataclasses.dataclass(frozen=True)
class Config:
    """A whole validated configuration; paths are absolute.

    Attributes:
        path: The INI file it was read from.
        application: ``"REGRESSION"`` or ``"GAN"``.
        app: That section's values.
        sources: Input source sections by name, in file order.
    """

    path: Path
    system: SystemSection
    network: NetworkSection
    training: TrainingSection
    inference: InferenceSection
    evaluation: EvaluationSection
    uncertainty: UncertaintySection
    calibration: CalibrationSection
    export: ExportSection
    phantom: PhantomSection
    application: str
    app: RegressionSection | GanSection
    sources: Mapping[str, InputSource]

    @property
    def model_dir(self) -> Path:
        """``[SYSTEM] model_dir`` as a path."""
        return Path(self.system.model_dir)

    @property
    def input_sections(self) -> tuple[str, ...]:
        """Sections fed to the network (REGRESSION image / GAN conditioning)."""
        return self.app.image if isinstance(self.app, RegressionSection) else self.app.conditioning

    @property
    def target_section(self) -> str:
        """Section of the target modality (REGRESSION output / GAN image)."""
        return self.app.output if isinstance(self.app, RegressionSection) else self.app.image

    @property
    def per_subject_target(self) -> bool:
        """Whether each subject's target is normalised by its own statistics (maps in normalised units)."""
        source = self.sources.get(self.target_section)
        return source is not None and source.target_normalisation == "per_subject"

    @property
    def family(self) -> str:
        """Distribution family name as :mod:`tfuq.distributions` spells it."""
        return "point" if self.uncertainty.family == "none" else self.uncertainty.family

    def section(self, name: str) -> Any:
        """Return a section by its INI name (reserved, application or source)."""
        if name in SECTIONS:
            return getattr(self, name.lower())
        if name == self.application:
            return self.app
        if name in self.sources:
            return self.sources[name]
        raise KeyError(name)

    def to_ini(self) -> str:
        """Render the whole config as INI text that loads back to an equal Config."""
        lines: list[str] = []
        names = [*SECTIONS, self.application, *self.sources]
        for name in names:
            section = self.section(name)
            lines.append(f"[{name}]")
            for key in field_specs(type(section)):
                lines.append(f"{key} = {format_value(getattr(section, key))}".rstrip())
            lines.append("")
        return "\n".join(lines)


def parse_overrides(items: Iterable[str]) -> list[tuple[str, str, str]]:
    """Parse ``SECTION.key=value`` strings (the CLI's ``--set``).

    Raises:
        ConfigError: an item not of that form.
    """
    out = []
    for item in items:
        head, sep, value = item.partition("=")
        section, dot, key = head.strip().partition(".")
        if not sep or not dot or not section or not key:
            raise ConfigError(f"--set {item!r}: expected SECTION.key=value, e.g. TRAINING.lr=0.001")
        out.append((section.strip(), key.strip().lower(), value.strip()))
    return out


def _closest(word: str, options: Iterable[str]) -> str:
    match = difflib.get_close_matches(word, list(options), n=1, cutoff=0.6)
    return f" (did you mean {match[0]!r}?)" if match else ""


def _read(path: Path, overrides: list[tuple[str, str, str]]) -> configparser.ConfigParser:
    if not path.is_file():
        raise ConfigError(f"{path}: no such config file")
    parser = configparser.ConfigParser(
        interpolation=None, inline_comment_prefixes=("#", ";"), empty_lines_in_values=False
    )
    try:
        with path.open(encoding="utf-8") as handle:
            parser.read_file(handle, source=str(path))
    except (configparser.Error, UnicodeDecodeError) as err:
        first = str(err).strip().splitlines()[0]
        raise ConfigError(f"{path}: not a valid INI file: {first}") from None
    for section, key, value in overrides:
        if not parser.has_section(section):
            parser.add_section(section)
        parser.set(section, key, value)
    return parser


def _resolve(value: str, base: Path) -> str:
    if value == "" or value.startswith(PHANTOM_PREFIX):
        return value
    p = Path(os.path.expanduser(value))
    return os.path.normpath(p if p.is_absolute() else base / p)


def _parse_section(
    path: Path,
    parser: configparser.ConfigParser,
    name: str,
    cls: type,
    extra: Mapping[str, Any] | None = None,
) -> Any:
    specs = field_specs(cls)
    values: dict[str, Any] = dict(extra or {})
    if parser.has_section(name):
        for key, text in parser.items(name):
            if key not in specs:
                raise ConfigError(f"{path}: [{name}] unknown key {key!r}{_closest(key, specs)}")
            try:
                values[key] = parse_value(specs[key], text)
            except ConfigValueError as err:
                raise ConfigError(f"{path}: [{name}] {key}: expected {err}, got {text!r}") from None
    return cls(**values)


def _resolve_paths(section: Any, base_for: Mapping[str, Path]) -> Any:
    changes = {}
    for key, spec in field_specs(type(section)).items():
        if spec.path is None:
            continue
        value = getattr(section, key)
        base = base_for[spec.path]
        changes[key] = tuple(_resolve(v, base) for v in value) if spec.is_tuple else _resolve(value, base)
    return dataclasses.replace(section, **changes)


def _check_network(path: Path, network: NetworkSection, ini_dir: Path) -> NetworkSection:
    name = network.name
    if name.startswith("keras:"):
        target = name[len("keras:") :].strip()
        if not target:
            raise ConfigError(f"{path}: [NETWORK] name: expected keras:path/to/model.keras, got {name!r}")
        return dataclasses.replace(network, name="keras:" + _resolve(target, ini_dir))
    if name not in NETWORKS:
        raise ConfigError(
            f"{path}: [NETWORK] name: expected one of {', '.join(NETWORKS)} or keras:path.keras, "
            f"got {name!r}{_closest(name, NETWORKS)}"
        )
    return network


def load_config(path: PathLike, overrides: Iterable[str] = ()) -> Config:
    """Read, override, validate and resolve an INI configuration.

    Args:
        path: The INI file.
        overrides: ``SECTION.key=value`` strings applied before validation.

    NiftyNet's keys are translated first (:mod:`tfuq.config.niftynet`), so a
    NiftyNet regression or GAN INI loads with its meaning or is refused in one
    line.

    Returns:
        Config: frozen; relative paths resolved (inputs against the INI folder,
        outputs against ``model_dir``, as NiftyNet does).

    Raises:
        ConfigError: on any invalid input, with a one-line message; among
            them a relative output folder leading out of ``model_dir``
            (:mod:`tfuq.config.paths`).

    Example:
        >>> cfg = load_config("configs/demo_mr2ct.ini", ["TRAINING.max_iter=10"])
        >>> cfg.training.max_iter
        10
    """
    path = Path(path).expanduser().absolute()
    parser = _read(path, parse_overrides(overrides))
    ini_dir = path.parent

    apps = [name for name in APPLICATIONS if parser.has_section(name)]
    if len(apps) != 1:
        found = " and ".join(f"[{a}]" for a in apps) or "none"
        raise ConfigError(
            f"{path}: expected exactly one application section, [REGRESSION] or [GAN]; found {found}"
        )
    application = apps[0]
    translate_niftynet(parser, application, path)
    app = _parse_section(path, parser, application, APPLICATIONS[application])

    referenced: list[str] = []
    for key in _SOURCE_KEYS[application]:
        value = getattr(app, key)
        for name in value if isinstance(value, tuple) else (value,) if value else ():
            if not parser.has_section(name):
                raise ConfigError(f"{path}: [{application}] {key}: no input section [{name}] in the file")
            if name in SECTIONS or name in APPLICATIONS:
                raise ConfigError(f"{path}: [{application}] {key}: [{name}] is not an input section")
            if name not in referenced:
                referenced.append(name)
    inputs = app.image if application == "REGRESSION" else app.conditioning
    if app.lesion and app.lesion in (*inputs, app.output if application == "REGRESSION" else app.image):
        raise ConfigError(
            f"{path}: [{application}] lesion: [{app.lesion}] is a network input or the target; expected "
            "a label section of its own"
        )
    main_keys = ("image", "output") if application == "REGRESSION" else ("conditioning", "image")
    for key in main_keys:
        if not getattr(app, key):
            raise ConfigError(
                f"{path}: [{application}] {key}: expected the name of an input section, got nothing"
            )

    known = [*SECTIONS, *APPLICATIONS, *referenced]
    for name in parser.sections():
        if name not in known:
            raise ConfigError(
                f"{path}: unknown section [{name}]{_closest(name, known)}; input sections must be "
                f"named by [{application}]"
            )

    system = _parse_section(path, parser, "SYSTEM", SystemSection)
    model_dir = Path(_resolve(system.model_dir, ini_dir)) if system.model_dir else ini_dir
    system = dataclasses.replace(system, model_dir=os.path.normpath(model_dir))
    bases = {"ini": ini_dir, "model_dir": model_dir}
    system = _resolve_paths(system, bases)

    parsed: dict[str, Any] = {"system": system}
    classes = {
        "NETWORK": NetworkSection, "TRAINING": TrainingSection, "INFERENCE": InferenceSection,
        "EVALUATION": EvaluationSection, "UNCERTAINTY": UncertaintySection,
        "CALIBRATION": CalibrationSection, "EXPORT": ExportSection, "PHANTOM": PhantomSection,
    }  # fmt: skip
    for name, cls in classes.items():
        section = _parse_section(path, parser, name, cls)
        check_contained_outputs(path, name, section, model_dir)
        parsed[name.lower()] = _resolve_paths(section, bases)
    parsed["network"] = _check_network(path, parsed["network"], ini_dir)
    if application == "GAN" and parsed["training"].loss_type != "nll":
        raise ConfigError(
            f"{path}: [TRAINING] loss_type = {parsed['training'].loss_type}: a [GAN] does not use it; its "
            "generator loss is [GAN] lambda_adv, lambda_l1, lambda_nll and lambda_kl"
        )
    if not parsed["export"].model_name:
        parsed["export"] = dataclasses.replace(parsed["export"], model_name=path.stem)
    flips = parsed["training"].random_flipping_axes
    if flips == (-1,):
        parsed["training"] = dataclasses.replace(parsed["training"], random_flipping_axes=())
    elif -1 in flips:
        raise ConfigError(f"{path}: [TRAINING] random_flipping_axes: -1 (none) cannot be combined with axes")

    sources = {
        name: _resolve_paths(_parse_section(path, parser, name, InputSource, {"name": name}), bases)
        for name in parser.sections()
        if name in referenced
    }
    for name, source in sources.items():
        if not source.path_to_search and not source.csv_file:
            raise ConfigError(f"{path}: [{name}] path_to_search: expected a folder, phantom:, or a csv_file")
        pairs = [{"L", "R"}, {"A", "P"}, {"S", "I"}]
        if source.axcodes and any(len(pair & set(source.axcodes)) != 1 for pair in pairs):
            raise ConfigError(
                f"{path}: [{name}] axcodes: expected one code from each of L/R, A/P, S/I, "
                f"got {', '.join(source.axcodes)!r}"
            )
        for entry in source.path_to_search:
            if entry.startswith(PHANTOM_PREFIX) and entry != PHANTOM_PREFIX:
                raise ConfigError(
                    f"{path}: [{name}] path_to_search: expected exactly {PHANTOM_PREFIX!r} for the "
                    f"phantom (settings go in [PHANTOM]), got {entry!r}"
                )
    target = app.output if application == "REGRESSION" else app.image
    _check_target_normalisation(path, sources, target, parsed["evaluation"])
    training = parsed["training"]
    held = training.exclude_fraction_for_validation + training.exclude_fraction_for_inference
    if held >= 1.0:
        raise ConfigError(
            f"{path}: [TRAINING] exclude_fraction_for_validation + exclude_fraction_for_inference must be "
            f"below 1 to leave Training subjects, got {training.exclude_fraction_for_validation:g} + "
            f"{training.exclude_fraction_for_inference:g}"
        )
    return Config(path=path, application=application, app=app, sources=sources, **parsed)


def _check_target_normalisation(
    path: Path, sources: Mapping[str, InputSource], target: str, evaluation: EvaluationSection
) -> None:
    """``target_normalisation = per_subject``: only on the target, with a data-fitted method."""
    for name, source in sources.items():
        if source.target_normalisation != "per_subject":
            continue
        if name != target:
            raise ConfigError(
                f"{path}: [{name}] target_normalisation = per_subject: only the target section [{target}] "
                "takes it (inputs are always normalised per subject)"
            )
        if source.intensity_normalisation not in ("minmax", "percentile", "zscore"):
            raise ConfigError(
                f"{path}: [{name}] target_normalisation = per_subject needs intensity_normalisation = "
                f"minmax, percentile or zscore, got {source.intensity_normalisation}"
            )
        if evaluation.target_units != "normalised":
            raise ConfigError(
                f"{path}: [EVALUATION] target_units = {evaluation.target_units}: with [{name}] "
                "target_normalisation = per_subject the maps are in normalised units; "
                "set target_units = normalised"
            )
