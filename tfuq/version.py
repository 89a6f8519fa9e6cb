"""The package version (floor 0: anything may record it, e.g. in a phantom's metadata)."""

__all__ = ["__version__"]

__version__ = "0.1.0.dev0"
