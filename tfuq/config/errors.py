"""The configuration error: one line naming the file, section, key and what to use."""

from __future__ import annotations

from tfuq.errors import UserError

__all__ = ["ConfigError"]


class ConfigError(UserError):
    """A configuration problem caused by the user (one line, exit code 2)."""
