"""NIfTI reading and writing with canonical orientation and exact write-back.

Volumes are read once at the NIfTI boundary, reoriented to RAS+ (or to the
axis codes asked for) by permuting and flipping axes only -- no
interpolation -- and converted to ``float32``. Everything needed to undo that
is kept on the :class:`Volume`, so :func:`save_volume` writes an array of the
same grid back in the file's original orientation, affine and header: a map
written by tfuq overlays the input scan in any viewer.

Reorientation uses :mod:`nibabel.orientations` (``io_orientation``,
``ornt_transform``, ``apply_orientation``, ``inv_ornt_aff``), as NiftyNet's
image loader did.
"""

from __future__ import annotations

import dataclasses
import zlib
from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
import numpy.typing as npt
from nibabel import orientations
from nibabel.filebasedimages import ImageFileError

from tfuq.atomic import atomic_path
from tfuq.errors import UserError
from tfuq.typing import Affine, PathLike

__all__ = [
    "NIFTI_SUFFIXES",
    "Volume",
    "VolumeGeometry",
    "load_volume",
    "read_geometry",
    "save_volume",
    "volume_from_array",
]

#: File name endings read and written as NIfTI.
NIFTI_SUFFIXES = (".nii", ".nii.gz")
_RAS = ("R", "A", "S")
_AXIS_PAIRS = ({"L", "R"}, {"A", "P"}, {"I", "S"})
_READ_ERRORS = (ImageFileError, OSError, EOFError, zlib.error, ValueError, TypeError)


@dataclasses.dataclass(frozen=True, eq=False)
class Volume:
    """An image on a voxel grid, with what is needed to write results back.

    Volumes compare by identity (arrays are not compared element-wise).

    Attributes:
        array: Voxel values, shape ``(X, Y, Z)`` or ``(X, Y, Z, C)``, in the
            orientation given by ``affine`` (RAS+ unless other axis codes
            were asked for when loading).
        affine: ``(4, 4)`` float64 voxel-index -> world (mm) map of ``array``.
        path: File the volume was read from (None for arrays made in memory).
        header: Copy of the original NIfTI header (qform/sform and their
            codes, pixdim, units, ...), reused when writing.
        original_affine: ``(4, 4)`` affine of the grid in its original
            (on-disk) orientation.
        original_shape: Array shape as stored on disk (including singleton or
            channel axes).
        to_original: ``(3, 2)`` nibabel orientation transform taking ``array``
            back to the on-disk axis order and directions.

    Example:
        >>> vol = load_volume("sub01_t1.nii.gz")  # doctest: +SKIP
        >>> save_volume(vol.array * 2, vol, "sub01_t1x2.nii.gz")  # doctest: +SKIP
    """

    array: np.ndarray
    affine: Affine
    path: Path | None
    header: nib.Nifti1Header
    original_affine: Affine
    original_shape: tuple[int, ...]
    to_original: np.ndarray

    @property
    def shape(self) -> tuple[int, int, int]:
        """Spatial shape ``(X, Y, Z)`` of ``array``."""
        return tuple(int(n) for n in self.array.shape[:3])  # type: ignore[return-value]

    @property
    def num_channels(self) -> int:
        """Number of channels (1 for a 3D array)."""
        return 1 if self.array.ndim == 3 else int(self.array.shape[3])

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel sizes in mm along the three array axes (norms of the affine columns)."""
        sizes = np.sqrt(np.sum(self.affine[:3, :3] ** 2, axis=0))
        return tuple(float(s) for s in sizes)  # type: ignore[return-value]

    @property
    def axcodes(self) -> tuple[str, str, str]:
        """Orientation codes of ``array``'s axes, e.g. ``("R", "A", "S")``."""
        return tuple(nib.aff2axcodes(self.affine))  # type: ignore[return-value]

    @property
    def name(self) -> str:
        """File name for messages (``"<array>"`` for volumes made in memory)."""
        return str(self.path) if self.path is not None else "<array>"

    def with_array(self, array: npt.ArrayLike) -> Volume:
        """Return a volume on the same grid holding ``array``.

        Args:
            array: Values with the same spatial shape ``(X, Y, Z)`` as this
                volume; any dtype, optional trailing channel axis.

        Returns:
            A new :class:`Volume` sharing this volume's geometry and header.

        Raises:
            ValueError: The spatial shape differs.
        """
        values = np.asarray(array)
        _check_grid_shape(values, self.shape, self.name)
        return dataclasses.replace(self, array=values)

    def on_grid(self, array: npt.ArrayLike, affine: npt.ArrayLike) -> Volume:
        """Return a volume on a new grid that keeps this volume's file orientation.

        Used after resampling: written with :func:`save_volume`, the new grid
        is stored in the same axis order and directions as the original file,
        with the original header's qform/sform codes and units.

        Args:
            array: Values on the new grid, shape ``(X', Y', Z'[, C])``.
            affine: ``(4, 4)`` voxel -> world map of the new grid, in this
                volume's array orientation.

        Returns:
            A new :class:`Volume`.

        Raises:
            ValueError: ``array`` is not 3D/4D or ``affine`` is not an
                invertible 4x4 matrix.
        """
        values = np.asarray(array)
        new_affine = _check_affine(affine)
        if values.ndim not in (3, 4):
            raise ValueError(f"Expected a 3D or 4D array. Received: array.shape={values.shape}")
        # Axis transform from this array orientation to the original file orientation.
        file_ornt = orientations.io_orientation(self.original_affine)
        cur_ornt = orientations.io_orientation(new_affine)
        to_original = orientations.ornt_transform(cur_ornt, file_ornt)
        original_affine = new_affine @ orientations.inv_ornt_aff(to_original, values.shape[:3])
        spatial = orientations.apply_orientation(np.broadcast_to(0, values.shape[:3]), to_original)
        original_shape = (*(int(n) for n in spatial.shape), *self.original_shape[3:])
        header = _header_for_grid(self.header, original_affine, original_shape)
        return Volume(values, new_affine, self.path, header, original_affine, original_shape, to_original)


def volume_from_array(
    array: npt.ArrayLike,
    affine: npt.ArrayLike,
    *,
    path: PathLike | None = None,
) -> Volume:
    """Wrap an in-memory array and its affine as a :class:`Volume`.

    The grid is its own "original": :func:`save_volume` writes it as given,
    with qform and sform set to ``affine`` (code 1, scanner), units mm/s.

    Args:
        array: Values, shape ``(X, Y, Z)`` or ``(X, Y, Z, C)``.
        affine: ``(4, 4)`` voxel -> world (mm) map.
        path: Optional source path, used in messages.

    Returns:
        A :class:`Volume` with float arrays kept as given.

    Example:
        >>> vol = volume_from_array(np.zeros((4, 5, 6), np.float32), np.eye(4))
        >>> vol.spacing
        (1.0, 1.0, 1.0)
    """
    values = np.asarray(array)
    matrix = _check_affine(affine)
    if values.ndim not in (3, 4):
        raise ValueError(f"Expected a 3D or 4D array. Received: array.shape={values.shape}")
    header = nib.Nifti1Header()
    header.set_xyzt_units("mm", "sec")
    header = _header_for_grid(header, matrix, tuple(int(n) for n in values.shape[:3]), code=1)
    identity = orientations.axcodes2ornt(("R", "A", "S"))
    return Volume(
        values,
        matrix,
        Path(path) if path is not None else None,
        header,
        matrix.copy(),
        tuple(int(n) for n in values.shape),
        identity,
    )


def load_volume(
    path: PathLike,
    *,
    axcodes: Sequence[str] | None = None,
    dtype: npt.DTypeLike = np.float32,
) -> Volume:
    """Read a NIfTI file, reoriented to RAS+ (or ``axcodes``) without interpolation.

    Intensity scaling (``scl_slope``/``scl_inter``) is applied. A 4D file with
    a trailing singleton axis gives a 3D array; a 4D file ``(X, Y, Z, C)`` or
    a NIfTI vector image ``(X, Y, Z, 1, C)`` gives a ``(X, Y, Z, C)`` array.

    Args:
        path: A ``.nii`` or ``.nii.gz`` file.
        axcodes: Target axis codes, one of L/R, A/P, I/S per axis, e.g.
            ``("L", "P", "S")``. Default None: RAS+.
        dtype: Floating dtype of the array. Default float32.

    Returns:
        The :class:`Volume`.

    Raises:
        UserError: The file is missing, not a readable NIfTI file (corrupt,
            truncated), not 3D (or 3D plus channels), or holds NaN or
            infinite values. The message names the file.
        ValueError: ``axcodes`` or ``dtype`` is invalid.

    Example:
        >>> vol = load_volume("TCGA-DU-7294_t1.nii.gz")  # doctest: +SKIP
        >>> vol.axcodes, vol.shape
        (('R', 'A', 'S'), (240, 240, 155))
    """
    target = _check_axcodes(axcodes)
    out_dtype = np.dtype(dtype)
    if not np.issubdtype(out_dtype, np.floating):
        raise ValueError(f"Expected a floating dtype. Received: dtype={out_dtype}")
    file = Path(path)
    image = _open(file)
    stored_shape = tuple(int(n) for n in image.shape)
    spatial_shape = _spatial_layout(stored_shape, file)
    original_affine = _file_affine(image, file)
    _check_size(image, file, stored_shape)
    try:
        data = image.get_fdata(dtype=np.float64 if out_dtype.itemsize > 4 else np.float32)
    except _READ_ERRORS as error:
        raise UserError(f"{file}: could not read the voxel data ({_reason(error)}).") from None
    data = data.reshape(spatial_shape)
    n_nan = int(np.count_nonzero(np.isnan(data)))
    if n_nan:
        raise UserError(f"{file}: contains {n_nan} NaN voxels; expected finite values.")
    n_inf = int(np.count_nonzero(np.isinf(data)))
    if n_inf:
        raise UserError(f"{file}: contains {n_inf} infinite voxels; expected finite values.")
    file_ornt = orientations.io_orientation(original_affine)
    target_ornt = orientations.axcodes2ornt(target)
    to_target = orientations.ornt_transform(file_ornt, target_ornt)
    array = np.ascontiguousarray(orientations.apply_orientation(data, to_target), dtype=out_dtype)
    affine = original_affine @ orientations.inv_ornt_aff(to_target, spatial_shape[:3])
    return Volume(
        array=array,
        affine=affine,
        path=file,
        header=image.header.copy(),
        original_affine=original_affine,
        original_shape=stored_shape,
        to_original=orientations.ornt_transform(target_ornt, file_ornt),
    )


@dataclasses.dataclass(frozen=True, eq=False)
class VolumeGeometry:
    """The grid of a NIfTI file, read from its header only (no voxel is read).

    Attributes:
        path: The file.
        shape: Spatial shape ``(X, Y, Z)`` in the orientation asked for (as
            :func:`load_volume` would give it).
        affine: ``(4, 4)`` voxel -> world map of that grid.
        num_channels: Channels per voxel (1 for a 3D file).
    """

    path: Path
    shape: tuple[int, int, int]
    affine: Affine
    num_channels: int

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel sizes in mm along the three axes (norms of the affine columns)."""
        sizes = np.sqrt(np.sum(self.affine[:3, :3] ** 2, axis=0))
        return tuple(float(s) for s in sizes)  # type: ignore[return-value]


def read_geometry(path: PathLike, *, axcodes: Sequence[str] | None = None) -> VolumeGeometry:
    """Read a NIfTI file's grid from its header, as :func:`load_volume` would orient it.

    The cheap check of a file before its voxels are read: it refuses what
    :func:`load_volume` would refuse from the header alone (a missing,
    empty, non-NIfTI or cut header; a 2D or 5D+ image; a zero-sized axis;
    a singular or non-finite affine; an uncompressed ``.nii`` file shorter
    than its header says). A ``.nii.gz`` file cut in its data block is only
    found when its voxels are read.

    Args:
        path: A ``.nii`` or ``.nii.gz`` file.
        axcodes: Axis codes to orient to (default RAS+), as for :func:`load_volume`.

    Returns:
        The file's :class:`VolumeGeometry`.

    Raises:
        UserError: any of the problems above; the message names the file.
        ValueError: ``axcodes`` is invalid.
    """
    target = _check_axcodes(axcodes)
    file = Path(path)
    image = _open(file)
    stored_shape = tuple(int(n) for n in image.shape)
    spatial_shape = _spatial_layout(stored_shape, file)
    affine = _file_affine(image, file)
    _check_size(image, file, stored_shape)
    to_target = orientations.ornt_transform(
        orientations.io_orientation(affine), orientations.axcodes2ornt(target)
    )
    shape = [0, 0, 0]
    for axis, (new_axis, _) in enumerate(to_target):
        shape[int(new_axis)] = spatial_shape[axis]
    return VolumeGeometry(
        path=file,
        shape=tuple(shape),  # type: ignore[arg-type]
        affine=affine @ orientations.inv_ornt_aff(to_target, spatial_shape[:3]),
        num_channels=1 if len(spatial_shape) == 3 else int(spatial_shape[3]),
    )


def save_volume(
    array: npt.ArrayLike,
    reference: Volume,
    path: PathLike,
    *,
    overwrite: bool = False,
    dtype: npt.DTypeLike = np.float32,
) -> Path:
    """Write an array on ``reference``'s grid in the reference file's geometry.

    The array is taken back to the original axis order and directions and
    written with a copy of the original header: qform/sform and their codes,
    pixdim and units are kept byte for byte; the datatype is set to
    ``dtype``, intensity scaling is reset so values are stored exactly, and
    the display range (cal_min/cal_max) is cleared. A 3D array whose
    reference file had trailing singleton axes is stored with that layout;
    a multi-channel array is stored as ``(X, Y, Z, C)`` (or ``(X, Y, Z, 1, C)``
    when the reference file was a vector image).

    Args:
        array: Values, shape ``(X, Y, Z)`` or ``(X, Y, Z, C)`` with
            ``(X, Y, Z) == reference.shape``.
        reference: The volume whose grid ``array`` is on.
        path: Output file ending in ``.nii`` or ``.nii.gz``.
        overwrite: Replace an existing file. Default False.
        dtype: Stored dtype. Integer dtypes round to the nearest integer and
            refuse values out of range. Default float32.

    Returns:
        The path written.

    Raises:
        ValueError: The spatial shape differs from the reference's, or
            values do not fit an integer ``dtype``.
        UserError: ``path`` exists and ``overwrite`` is False, or its suffix
            is not a NIfTI one.
    """
    out = Path(path)
    if not out.name.endswith(NIFTI_SUFFIXES):
        raise UserError(f"{out}: output file name must end in .nii or .nii.gz.")
    values = np.asarray(array)
    _check_grid_shape(values, reference.shape, reference.name)
    out_dtype = np.dtype(dtype)
    values = _cast(orientations.apply_orientation(values, reference.to_original), out_dtype)
    values = values.reshape(_stored_layout(values.shape, reference.original_shape))
    header = reference.header.copy()
    header.set_data_dtype(out_dtype)
    header.set_data_shape(values.shape)
    # set_data_shape rewrites pixdim of unused dims; keep the reference's values.
    pixdim = np.array(reference.header["pixdim"], dtype=np.float32)
    used = slice(4, values.ndim + 1)
    pixdim[used] = np.where(pixdim[used] == 0, 1.0, pixdim[used])
    header["pixdim"] = pixdim
    header.set_slope_inter(None, None)
    header["cal_min"] = 0.0
    header["cal_max"] = 0.0
    image_class = nib.Nifti2Image if isinstance(header, nib.Nifti2Header) else nib.Nifti1Image
    # affine=None keeps the header's qform/sform fields exactly as they were.
    image = image_class(values, None, header=header)
    with atomic_path(out, overwrite=overwrite) as tmp:
        image.to_filename(tmp)
    return out


def _open(file: Path) -> nib.Nifti1Image | nib.Nifti2Image:
    """The nibabel image of ``file`` (header read, voxels not); UserError when it cannot be."""
    if not file.is_file():
        raise UserError(f"{file}: file not found.")
    if file.stat().st_size == 0:
        raise UserError(f"{file}: empty file (0 bytes); expected a NIfTI image.")
    try:
        image = nib.load(file)
    except _READ_ERRORS as error:
        raise UserError(f"{file}: not a readable NIfTI file ({_reason(error)}).") from None
    if not isinstance(image, nib.Nifti1Image | nib.Nifti2Image):
        raise UserError(f"{file}: not a NIfTI file (nibabel read it as {type(image).__name__}).")
    return image


def _file_affine(image: nib.Nifti1Image | nib.Nifti2Image, file: Path) -> Affine:
    """The image's voxel -> world affine; UserError when it is not finite and invertible."""
    affine = np.asarray(image.affine, dtype=np.float64)
    if not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise UserError(
            f"{file}: its header's voxel-to-world affine is not finite and invertible; "
            "fix the file's qform/sform."
        )
    return affine


def _check_size(image: nib.Nifti1Image | nib.Nifti2Image, file: Path, stored_shape: tuple[int, ...]) -> None:
    """UserError when an uncompressed file is shorter than its header says (a ``.gz`` is checked as read)."""
    if str(file).lower().endswith(".gz"):
        return
    offset = int(getattr(image.dataobj, "offset", image.header["vox_offset"]))
    expected = offset + int(np.prod(stored_shape)) * image.header.get_data_dtype().itemsize
    size = file.stat().st_size
    if size < expected:
        raise UserError(
            f"{file}: truncated NIfTI file ({size} bytes; its header describes {expected}); "
            "copy it again from its source."
        )


def _check_axcodes(axcodes: Sequence[str] | None) -> tuple[str, str, str]:
    if axcodes is None or len(axcodes) == 0:
        return _RAS
    codes = tuple(str(c).strip().upper() for c in axcodes)
    pairs = [next((i for i, p in enumerate(_AXIS_PAIRS) if c in p), None) for c in codes]
    if len(codes) != 3 or None in pairs or sorted(pairs) != [0, 1, 2]:  # type: ignore[type-var]
        raise ValueError(
            "Expected axcodes with one of L/R, one of A/P and one of I/S, e.g. ('R', 'A', 'S'). "
            f"Received: axcodes={tuple(axcodes)}"
        )
    return codes  # type: ignore[return-value]


def _check_affine(affine: npt.ArrayLike) -> Affine:
    matrix = np.asarray(affine, dtype=np.float64)
    if matrix.shape != (4, 4) or not np.all(np.isfinite(matrix)):
        raise ValueError(f"Expected a finite 4x4 affine. Received: affine with shape {matrix.shape}")
    if abs(np.linalg.det(matrix[:3, :3])) < 1e-12:
        raise ValueError(f"Expected an invertible affine. Received: affine=\n{matrix}")
    return matrix


def _check_grid_shape(values: np.ndarray, shape: tuple[int, ...], name: str) -> None:
    if values.ndim not in (3, 4) or tuple(values.shape[:3]) != tuple(shape):
        raise ValueError(
            f"Expected an array of spatial shape {tuple(shape)} (grid of {name}), optionally with "
            f"a trailing channel axis. Received: array.shape={tuple(values.shape)}"
        )


def _spatial_layout(stored: tuple[int, ...], file: Path) -> tuple[int, ...]:
    """Shape of the in-memory array for an on-disk shape; UserError if not a volume."""
    if 0 in stored:
        raise UserError(f"{file}: an image axis has no voxel; found shape {stored}.")
    if len(stored) == 3:
        return stored
    if len(stored) == 4:
        return stored[:3] if stored[3] == 1 else stored
    if len(stored) == 5 and stored[3] == 1:
        return stored[:3] if stored[4] == 1 else (*stored[:3], stored[4])
    raise UserError(
        f"{file}: expected a 3D volume (optionally with a trailing channel axis); found shape {stored}."
    )


def _stored_layout(shape: tuple[int, ...], original: tuple[int, ...]) -> tuple[int, ...]:
    """On-disk shape for an array in file orientation, following the reference file's layout."""
    channels = 1 if len(shape) == 3 else shape[3]
    if channels == 1 and len(original) > 3 and all(n == 1 for n in original[3:]):
        return (*shape[:3], *original[3:])
    if len(original) == 5 and channels > 1:
        return (*shape[:3], 1, channels)
    return shape


def _header_for_grid(
    template: nib.Nifti1Header, affine: Affine, shape: tuple[int, ...], code: int | None = None
) -> nib.Nifti1Header:
    """Copy ``template`` with dims, pixdim, qform and sform describing a new grid."""
    header = template.copy()
    header.set_data_shape(shape)
    if code is not None:
        qcode = scode = code
    else:
        qcode, scode = int(template["qform_code"]), int(template["sform_code"])
        if qcode == 0 and scode == 0:
            qcode = scode = 1
    header.set_qform(affine, code=qcode)
    header.set_sform(affine, code=scode)
    return header


def _cast(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    if np.issubdtype(dtype, np.floating):
        return values.astype(dtype, copy=False)
    if np.issubdtype(dtype, np.integer) or dtype == np.bool_:
        rounded = np.rint(values.astype(np.float64))
        info = np.iinfo(dtype) if dtype != np.bool_ else np.iinfo(np.uint8)
        if (
            not np.all(np.isfinite(rounded))
            or rounded.min(initial=0) < info.min
            or rounded.max(initial=0) > info.max
        ):
            raise ValueError(
                f"Expected finite values within [{info.min}, {info.max}] to store as {dtype}. "
                f"Received: values in [{np.nanmin(values)}, {np.nanmax(values)}]"
            )
        return rounded.astype(dtype)
    raise ValueError(f"Expected a numeric dtype to store. Received: dtype={dtype}")


def _reason(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__
