"""INI configuration: NiftyNet-shaped sections loaded into frozen dataclasses."""

from tfuq.config.defaults import render_defaults
from tfuq.config.fields import ConfigValueError, FieldSpec, field_specs, format_value, parse_value, setting
from tfuq.config.loader import PHANTOM_PREFIX, Config, ConfigError, load_config, parse_overrides
from tfuq.config.sections import (
    APPLICATIONS,
    PHASES,
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

__all__ = [
    "APPLICATIONS",
    "PHANTOM_PREFIX",
    "PHASES",
    "SECTIONS",
    "CalibrationSection",
    "Config",
    "ConfigError",
    "ConfigValueError",
    "EvaluationSection",
    "ExportSection",
    "FieldSpec",
    "GanSection",
    "InferenceSection",
    "InputSource",
    "NetworkSection",
    "PhantomSection",
    "RegressionSection",
    "SystemSection",
    "TrainingSection",
    "UncertaintySection",
    "field_specs",
    "format_value",
    "load_config",
    "parse_overrides",
    "parse_value",
    "render_defaults",
    "setting",
]
