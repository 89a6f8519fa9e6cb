"""Shared type aliases."""

from __future__ import annotations

import os
from typing import Union

import numpy as np
import numpy.typing as npt

__all__ = ["Affine", "FloatArray", "PathLike", "Shape3"]

#: A filesystem path given as ``str`` or :class:`os.PathLike`.
PathLike = Union[str, "os.PathLike[str]"]
#: A float NumPy array of any shape.
FloatArray = npt.NDArray[np.floating]
#: A 4x4 voxel-to-world (RAS+ mm) affine.
Affine = npt.NDArray[np.float64]
#: A 3D spatial shape.
Shape3 = tuple[int, int, int]
