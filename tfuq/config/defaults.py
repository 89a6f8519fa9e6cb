"""Render ``configs/defaults.ini``: every key, its default and a one-line comment.

The file is generated from the section dataclasses, and a test fails when the
committed file differs from :func:`render_defaults`, so it cannot drift.
Regenerate it with ``make defaults``.
"""

from __future__ import annotations

from tfuq.config.fields import field_specs, format_value
from tfuq.config.sections import APPLICATIONS, SECTIONS, InputSource

__all__ = ["render_defaults"]

_HEADER = """\
# tfuq configuration reference: every key with its default and meaning.
# Generated from tfuq/config/sections.py by `make defaults`; a test keeps it in sync.
#
# A config has exactly one application section, [REGRESSION] or [GAN], whose
# keys name its input sections; every other non-reserved section is an input
# source (here the example [MR]). Keys follow NiftyNet's config_spec where
# NiftyNet has them ("tfuq:" marks tfuq's own). Lists are comma-separated; an
# empty value means "not set". Relative input paths resolve against the INI
# file's folder, output paths against [SYSTEM] model_dir. NiftyNet's other keys
# (whitening, cuda_devices, ...) are translated or refused on loading: see
# "NiftyNet configs" in docs/reference.md.
"""


def render_defaults() -> str:
    """Return the text of ``configs/defaults.ini``."""
    blocks = [_HEADER]
    sections = [*SECTIONS.items(), *APPLICATIONS.items(), ("MR", InputSource)]
    for name, cls in sections:
        lines = [f"[{name}]"]
        doc = (cls.__doc__ or "").strip().splitlines()[0].replace("``", "")
        lines.insert(0, f"# {doc}")
        for key, spec in field_specs(cls).items():
            lines.append(f"# {spec.help}")
            lines.append(f"{key} = {format_value(spec.default)}".rstrip())
        blocks.append("\n".join(lines) + "\n")
    return "\n".join(blocks)
