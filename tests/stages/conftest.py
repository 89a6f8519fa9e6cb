"""Fixtures of the stage tests: the training tests' tiny phantom configs."""

from training_setup import phantom_cache, tiny_config, tiny_ini

__all__ = ["phantom_cache", "tiny_config", "tiny_ini"]
