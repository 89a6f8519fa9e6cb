"""Fixtures of the training tests: a tiny phantom shared by the session and configs on it."""

from training_setup import phantom_cache, tiny_config, tiny_ini

__all__ = ["phantom_cache", "tiny_config", "tiny_ini"]
