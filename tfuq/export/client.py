"""A client for TF Serving's REST predict API, with pluggable transports.

The request is TF Serving's *columnar* format, one named tensor per
signature input, and the answer comes back keyed by output name::

    POST http://<host>:8501/v1/models/<name>[/versions/<v>]:predict
    {"signature_name": "serving_default",
     "inputs": {"windows": [[[[[0.1], ...]]]]}}          # (B, *window, C) nested lists

    200 {"outputs": {"mean": [...], "epistemic_std": [...], ...}}
    4xx/5xx {"error": "..."}

(TF Serving returns the bare value instead of a dict when a signature has a
single output; both shapes are decoded.) JSON numbers are written from
float32 values with their shortest round-trip repr, so the windows arrive
bit for bit.

The transport -- a function ``(url, body) -> response body`` -- is
injectable: :func:`http_transport` talks to a real server with the standard
library; :func:`saved_model_transport` answers the same requests in process
from a SavedModel (to test the client, or to serve without a server).

Reference:
    TF Serving RESTful API, https://www.tensorflow.org/tfx/serving/api_rest.
"""

from __future__ import annotations

import contextlib
import json
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from tfuq.errors import UserError
from tfuq.export.archive import SERVING_DEFAULT
from tfuq.typing import PathLike

__all__ = [
    "ServingClient",
    "ServingError",
    "Transport",
    "decode_request",
    "decode_response",
    "encode_request",
    "encode_response",
    "http_transport",
    "predict_url",
    "saved_model_transport",
]

#: ``transport(url, request_body) -> response_body``; raises :class:`ServingError` on failure.
Transport = Callable[[str, bytes], bytes]


class ServingError(UserError):
    """The server refused or failed a request (its message is kept)."""


def predict_url(base_url: str, model_name: str, version: int | None = None) -> str:
    """``<base_url>/v1/models/<model_name>[/versions/<version>]:predict``.

    Example:
        >>> predict_url("http://localhost:8501", "mr2ct", 2)
        'http://localhost:8501/v1/models/mr2ct/versions/2:predict'
    """
    if not base_url.startswith(("http://", "https://")):
        raise UserError(f"--serving-url: expected http://host:port, got {base_url!r}")
    versioned = "" if version is None else f"/versions/{int(version)}"
    return f"{base_url.rstrip('/')}/v1/models/{model_name}{versioned}:predict"


def _json_value(value: Any) -> Any:
    array = np.asarray(value)
    if array.dtype.kind == "f":
        if not np.all(np.isfinite(array)):
            raise ValueError("Expected finite input values. Received: NaN or infinite values.")
        array = array.astype(np.float32)  # what the signatures take; exact through JSON
    return array.tolist()


def encode_request(inputs: Mapping[str, Any], signature: str = SERVING_DEFAULT) -> bytes:
    """The columnar JSON body for ``inputs`` (name -> array or scalar).

    Raises:
        ValueError: no inputs, or non-finite values.
    """
    if not inputs:
        raise ValueError("Expected at least one named input. Received: no inputs")
    payload = {"signature_name": signature, "inputs": {k: _json_value(v) for k, v in inputs.items()}}
    return json.dumps(payload, allow_nan=False).encode("utf-8")


def decode_request(body: bytes) -> tuple[str, dict[str, Any]]:
    """Inverse of :func:`encode_request`: ``(signature_name, {name: nested lists})``."""
    payload = json.loads(body)
    if not isinstance(payload, dict) or not isinstance(payload.get("inputs"), dict):
        raise ServingError('Malformed request: expected a JSON object with an "inputs" object.')
    return str(payload.get("signature_name", SERVING_DEFAULT)), payload["inputs"]


def encode_response(outputs: Mapping[str, Any]) -> bytes:
    """A TF Serving style response body (``{"outputs": {...}}``, bare value for one output)."""
    values = {k: np.asarray(v).tolist() for k, v in outputs.items()}
    body = next(iter(values.values())) if len(values) == 1 else values
    return json.dumps({"outputs": body}).encode("utf-8")


def decode_response(body: bytes, single_name: str = "output") -> dict[str, np.ndarray]:
    """Output arrays (float32) from a response body.

    Args:
        body: Response bytes.
        single_name: Key given to a bare single-output value.

    Raises:
        ServingError: an ``"error"`` answer or a body without ``"outputs"``.
    """
    try:
        payload = json.loads(body)
    except ValueError as error:
        raise ServingError(f"serving answer is not JSON: {error}") from None
    if isinstance(payload, dict) and "error" in payload:
        raise ServingError(f"serving error: {payload['error']}")
    if not isinstance(payload, dict) or "outputs" not in payload:
        raise ServingError('serving answer without "outputs"')
    outputs = payload["outputs"]
    if not isinstance(outputs, dict):
        outputs = {single_name: outputs}
    return {k: np.asarray(v, dtype=np.float32) for k, v in outputs.items()}


def http_transport(timeout: float = 300.0) -> Transport:
    """POST JSON with the standard library (no extra dependency).

    Args:
        timeout: Seconds per request. Default 300 (MC passes take time).

    Returns:
        A :data:`Transport`; HTTP errors become :class:`ServingError` with
        the server's ``"error"`` text, unreachable servers name the URL.
    """

    def post(url: str, body: bytes) -> bytes:
        request = urllib.request.Request(
            url, data=body, method="POST", headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as answer:
                return answer.read()
        except urllib.error.HTTPError as error:
            text = error.read().decode("utf-8", "replace")
            with contextlib.suppress(ValueError, AttributeError):  # not a JSON error object
                text = json.loads(text).get("error", text)
            raise ServingError(f"{url}: HTTP {error.code}: {' '.join(str(text).split())[:300]}") from None
        except (urllib.error.URLError, OSError) as error:
            raise ServingError(
                f"{url}: cannot reach the server ({getattr(error, 'reason', error)})"
            ) from None

    return post


def saved_model_transport(saved_model: PathLike | Any) -> Transport:
    """Answer REST predict requests in process from a SavedModel.

    Decodes the request exactly as a server would (:func:`decode_request`),
    runs the named signature of the loaded SavedModel and encodes the
    outputs (:func:`encode_response`); an unknown signature or input gives
    an ``{"error": ...}`` body, as TF Serving does.

    Args:
        saved_model: A SavedModel folder or an object from ``tf.saved_model.load``.

    Returns:
        A :data:`Transport` (the URL is ignored).
    """
    import tensorflow as tf

    loaded = saved_model if hasattr(saved_model, "signatures") else tf.saved_model.load(str(saved_model))

    def answer(url: str, body: bytes) -> bytes:
        signature_name, inputs = decode_request(body)
        if signature_name not in loaded.signatures:
            return json.dumps({"error": f"Serving signature name: {signature_name!r} not found"}).encode()
        signature = loaded.signatures[signature_name]
        specs = signature.structured_input_signature[1]
        if set(specs) != set(inputs):
            return json.dumps({"error": f"expected inputs {sorted(specs)}, got {sorted(inputs)}"}).encode()
        tensors = {k: tf.constant(v, dtype=specs[k].dtype) for k, v in inputs.items()}
        try:
            outputs = signature(**tensors)
        except (tf.errors.InvalidArgumentError, ValueError, TypeError) as error:
            return json.dumps({"error": " ".join(str(error).split())[:300]}).encode()
        return encode_response({k: v.numpy() for k, v in outputs.items()})

    return answer


class ServingClient:
    """Send named arrays to one served model and get its outputs back.

    Args:
        url: Server base URL, e.g. ``http://localhost:8501``.
        model_name: Served model name (``[EXPORT] model_name``).
        version: A fixed version, or None (default) for the served one.
        transport: Default :func:`http_transport`.

    Example:
        >>> client = ServingClient("http://localhost:8501", "mr2ct")  # doctest: +SKIP
        >>> maps = client.predict({"windows": batch})  # doctest: +SKIP
        >>> maps["total_std"].shape  # doctest: +SKIP
        (4, 32, 32, 32)
    """

    def __init__(
        self,
        url: str,
        model_name: str,
        *,
        version: int | None = None,
        transport: Transport | None = None,
    ) -> None:
        self.url = predict_url(url, model_name, version)
        self.model_name = model_name
        self.transport = transport or http_transport()

    def predict(self, inputs: Mapping[str, Any], signature: str = SERVING_DEFAULT) -> dict[str, np.ndarray]:
        """Run ``signature`` on ``inputs`` (name -> array) and return its outputs (float32 arrays).

        Raises:
            ServingError: the server answered with an error or could not be reached.
        """
        return decode_response(self.transport(self.url, encode_request(inputs, signature)))
