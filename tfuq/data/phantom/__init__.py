"""Built-in paired phantom with ground-truth noise: data without a download.

The kinds, the noise model and the files written are described in
:mod:`tfuq.data.phantom.generate`. Modules:

- :mod:`~tfuq.data.phantom.generate`: :func:`make_subject`, :func:`write_phantom`
  and the file layout (:func:`phantom_files`, ``phantom.json``).
- :mod:`~tfuq.data.phantom.spec`: :class:`PhantomSpec`, the checked settings.
- :mod:`~tfuq.data.phantom.subject`: one subject's anatomy and exact noise
  model, and draws from it.
- :mod:`~tfuq.data.phantom.tissues`: tissue labels and their CT and MR values.
- :mod:`~tfuq.data.phantom.noise`: the random part of an image and its exact moments.
- :mod:`~tfuq.data.phantom.wholebody`, :mod:`~tfuq.data.phantom.brain`: the anatomies.
- :mod:`~tfuq.data.phantom.shapes`: shapes and smooth random fields on world grids.

The package re-exports the names of :mod:`tfuq.data.phantom.generate`; the
other names stay in their modules.
"""

from tfuq.data.phantom.generate import PHANTOM_FORMAT_VERSION, make_subject, phantom_files, write_phantom
from tfuq.data.phantom.spec import ANOMALIES, KINDS, MODALITIES, PhantomOptionError, PhantomSpec
from tfuq.data.phantom.subject import (
    PhantomSubject,
    SubjectModel,
    insert_zero_cube,
    mr_tissue_scale,
    sample_subject,
    subject_id,
    subject_model,
)
from tfuq.data.phantom.tissues import LABELS, TISSUES

__all__ = [
    "ANOMALIES",
    "KINDS",
    "LABELS",
    "MODALITIES",
    "PHANTOM_FORMAT_VERSION",
    "TISSUES",
    "PhantomOptionError",
    "PhantomSpec",
    "PhantomSubject",
    "SubjectModel",
    "insert_zero_cube",
    "make_subject",
    "mr_tissue_scale",
    "phantom_files",
    "sample_subject",
    "subject_id",
    "subject_model",
    "write_phantom",
]
