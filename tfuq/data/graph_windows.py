"""Training windows cut in the TensorFlow graph from subjects held as tensors.

The tf.data pipeline (:mod:`tfuq.data.pipeline`) keeps every loaded subject
as tensors (:class:`SubjectTensors`, built by :func:`subject_tensors`; the
NumPy arrays are dropped, so a volume is held once) and draws only window
*starts* in Python (:func:`~tfuq.data.training_windows.sample_starts`, the
same draws as :func:`~tfuq.data.training_windows.sample_windows`). The
windows themselves are cut by :func:`window_cutter` inside ``Dataset.map``:
padded crops and, for MultiRes, block means of the ``f * w`` voxels of each
level (:mod:`tfuq.data.windows.graph_crop`). The elements are those of
:func:`~tfuq.data.training_windows.sample_windows` without augmentation for
the same starts: inputs ``(*spatial, C_in)`` float32 (MultiRes: a tuple of
levels, finest first), targets ``(*spatial, 2)`` = ``[target, mask]``, the
mask 0 outside the volume and within ``loss_border`` of the window's sides.
Crops are copies (bit-for-bit equal); a MultiRes block mean equals the NumPy
one to float32 round-off (Grappler may regroup the traced sums).

Why: a MultiRes 80^3 window reads a 320^3 context. Here it is one slice (a
pad at the border) and block sums in tf.data's own threads, and only the
levels leave the graph; no window passes through Python or its queues. The
memory of a paper-scale MultiRes run is the network's, not the windows'
(docs/training_scale.md).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from tfuq.data.training_windows import SubjectArrays, WindowGeometry

__all__ = ["SubjectTensors", "subject_tensors", "window_cutter"]


@dataclasses.dataclass(frozen=True)
class SubjectTensors:
    """One loaded subject as tensors, with what the start samplers need in NumPy.

    Attributes:
        id: Subject id.
        shape: Spatial shape ``(X, Y, Z)``.
        sampling_map: ``(X, Y, Z)`` map of weighted/balanced sampling, or None.
        minima: Minimum of each input channel, then the target's.
        inputs: ``(X, Y, Z, C_in)`` float32 tensor.
        target: ``(X, Y, Z, 1)`` float32 tensor.
        mask: ``(X, Y, Z, 1)`` uint8 tensor.
    """

    id: str
    shape: tuple[int, int, int]
    sampling_map: np.ndarray | None
    minima: tuple[float, ...]
    inputs: Any
    target: Any
    mask: Any


def subject_tensors(arrays: SubjectArrays) -> SubjectTensors:
    """Copy a subject's arrays into tensors (drop ``arrays`` afterwards to hold them once)."""
    import tensorflow as tf

    return SubjectTensors(
        id=arrays.id,
        shape=arrays.shape,
        sampling_map=arrays.sampling_map,
        minima=arrays.minima,
        inputs=tf.constant(arrays.inputs, tf.float32),
        target=tf.constant(arrays.target, tf.float32),
        mask=tf.constant(arrays.mask, tf.uint8),
    )


def _border_weights(geometry: WindowGeometry) -> np.ndarray | None:
    """``(*window, 1)`` float32: 0 within ``loss_border`` of the sides of every axis longer than 1, else 1."""
    b = geometry.loss_border
    if not b:
        return None
    weights = np.ones((*geometry.window, 1), np.float32)
    for axis, w in enumerate(geometry.window):
        if w > 1:
            index: list[Any] = [slice(None)] * 4
            index[axis] = np.r_[0:b, w - b : w]
            weights[tuple(index)] = 0
    return weights


def _cut(subject: SubjectTensors, geometry: WindowGeometry, border: np.ndarray | None, start: Any) -> Any:
    """The ``(inputs, targets)`` window of one subject at ``start`` (TF ops)."""
    import tensorflow as tf

    from tfuq.data.windows.graph_crop import crop_padded_tf, multires_windows_tf

    window, mode = geometry.window, geometry.padding_mode
    cval = list(subject.minima[:-1])
    if geometry.factors:
        levels = multires_windows_tf(subject.inputs, start, window, geometry.factors, mode=mode, cval=cval)
    else:
        levels = [crop_padded_tf(subject.inputs, start, window, mode=mode, cval=cval)]
    target = crop_padded_tf(subject.target, start, window, mode=mode, cval=[subject.minima[-1]])
    mask = tf.cast(crop_padded_tf(subject.mask, start, window, mode="constant"), tf.float32)
    if border is not None:
        mask = mask * tf.constant(border)
    targets = tf.concat([target, mask], axis=-1)
    if geometry.squeeze:
        levels, targets = [v[:, :, 0] for v in levels], targets[:, :, 0]
    return (tuple(levels) if geometry.factors else levels[0]), targets


def window_cutter(
    subjects: Sequence[SubjectTensors], geometry: WindowGeometry
) -> Callable[[Any, Any], tuple[Any, Any]]:
    """A ``Dataset.map`` function ``(subject_index, start) -> (inputs, targets)``.

    Args:
        subjects: The subjects, indexed by ``subject_index``.
        geometry: Window size, padding, squeeze, MultiRes levels, loss border.

    Returns:
        ``cut(subject_index, start)``: ``subject_index`` a scalar int32
        tensor, ``start`` ``(3,)`` int64; returns the element (see the module
        notes). Subjects of different shapes are branches of one
        ``tf.switch_case``.

    Raises:
        ValueError: no subject.
    """
    import tensorflow as tf

    if not subjects:
        raise ValueError("Expected at least one subject")
    border = _border_weights(geometry)

    def cut(subject_index: Any, start: Any) -> tuple[Any, Any]:
        branches = [functools.partial(_cut, s, geometry, border, start) for s in subjects]
        if len(branches) == 1:
            return branches[0]()
        return tf.switch_case(tf.cast(subject_index, tf.int32), branches)

    return cut
