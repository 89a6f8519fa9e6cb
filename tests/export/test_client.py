from __future__ import annotations

import json

import keras
import numpy as np
import pytest
from utils import predict_windows as sliding_window_predict

from tfuq.data.normalisation import NormalisationParams
from tfuq.data.windows import multires_windows, pad_volume, window_grid
from tfuq.distributions import constrain
from tfuq.errors import UserError
from tfuq.export import export_saved_model
from tfuq.export.client import (
    ServingClient,
    ServingError,
    decode_request,
    decode_response,
    encode_request,
    encode_response,
    http_transport,
    predict_url,
    saved_model_transport,
)
from tfuq.export.remote_inference import serve_volume
from tfuq.inference import mc_predict_volume, to_target_units
from tfuq.networks import UNet

UNITS = NormalisationParams("window", -1024.0, 4095.0)
WINDOW = (8, 8, 8)


def _model(rank: int = 3) -> UNet:
    keras.utils.set_random_seed(1)
    return UNet((*WINDOW[:rank], 1), family="normal", depth=1, base_filters=4, dropout="none")


@pytest.fixture(scope="module")
def deterministic(tmp_path_factory):
    """A model without dropout exported with T = 2: its answers are exact, so blending is testable."""
    model = _model()
    path = tmp_path_factory.mktemp("served") / "1"
    export_saved_model(model, path, family="normal", mc_samples=2, units=(UNITS.offset, UNITS.scale))
    return model, path


def _volume(shape=(13, 10, 6), seed=0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(*shape, 1)).astype(np.float32)


def test_request_and_response_encoding_round_trip_exactly():
    x = np.random.default_rng(0).normal(size=(2, 3, 4, 1)).astype(np.float32)
    body = encode_request({"windows": x, "mc_samples": 7}, "predict_mc")
    payload = json.loads(body)
    assert payload["signature_name"] == "predict_mc" and payload["inputs"]["mc_samples"] == 7
    signature, inputs = decode_request(body)
    assert signature == "predict_mc"
    np.testing.assert_array_equal(np.asarray(inputs["windows"], np.float32), x)  # bit for bit
    out = decode_response(encode_response({"mean": x[..., 0], "total_std": x[..., 0] ** 2}))
    np.testing.assert_array_equal(out["mean"], x[..., 0])
    single = decode_response(encode_response({"params": x}), single_name="params")
    np.testing.assert_array_equal(single["params"], x)  # TF Serving's bare single-output form


def test_bad_requests_and_answers():
    with pytest.raises(ValueError, match="finite"):
        encode_request({"windows": np.array([np.nan])})
    with pytest.raises(ValueError, match="at least one"):
        encode_request({})
    with pytest.raises(ServingError, match="serving error: boom"):
        decode_response(b'{"error": "boom"}')
    with pytest.raises(ServingError, match="outputs"):
        decode_response(b'{"predictions": []}')
    with pytest.raises(ServingError, match="not JSON"):
        decode_response(b"<html>")
    with pytest.raises(ServingError, match="inputs"):
        decode_request(b'{"instances": []}')


def test_urls():
    assert predict_url("http://h:8501/", "mr2ct") == "http://h:8501/v1/models/mr2ct:predict"
    assert predict_url("https://h", "m", 3) == "https://h/v1/models/m/versions/3:predict"
    with pytest.raises(UserError, match="serving-url"):
        predict_url("h:8501", "m")


def test_http_transport_names_an_unreachable_server():
    with pytest.raises(ServingError, match="cannot reach the server"):
        http_transport(timeout=2)("http://127.0.0.1:9/v1/models/m:predict", b"{}")


def test_in_process_transport_answers_like_a_server(deterministic):
    model, path = deterministic
    client = ServingClient("http://unused:8501", "m", transport=saved_model_transport(path))
    x = _volume((8, 8, 8))[np.newaxis]
    params = client.predict({"windows": x}, "predict_params")
    np.testing.assert_allclose(params["params"], model(x, training=False).numpy(), atol=1e-6)
    with pytest.raises(ServingError, match="not found"):
        client.predict({"windows": x}, "no_such_signature")
    with pytest.raises(ServingError, match="expected inputs"):
        client.predict({"images": x})
    with pytest.raises(ServingError, match="mc_samples must be >= 1"):
        client.predict({"windows": x, "mc_samples": 0}, "predict_mc")


@pytest.mark.parametrize(("overlap", "blending", "batch_size"), [(0.5, "gaussian", 3), (0.25, "constant", 8)])
def test_served_volume_equals_local_sliding_window_inference(deterministic, overlap, blending, batch_size):
    # Two local oracles on the same Keras model (no SavedModel, no JSON):
    # 1) sliding_window_predict on (loc, var, loc^2) channels in float64: the blended mixture has
    #    mean = <loc>, aleatoric = <var>, epistemic = <loc^2> - <loc>^2 (window disagreement);
    # 2) mc_predict_volume with T = 1 (a deterministic model), then to_target_units.
    model, path = deterministic
    volume = _volume()  # z = 6 < window 8: padded and cropped back
    client = ServingClient("http://unused:8501", "m", transport=saved_model_transport(path))
    served = serve_volume(client, volume, WINDOW, overlap=overlap, blending=blending, batch_size=batch_size)

    def moments(batch):
        named = constrain("normal", model(batch, training=False).numpy().astype(np.float64))
        loc, var = named["loc"].numpy(), named["scale"].numpy() ** 2
        return np.stack([loc, var, loc**2], axis=-1)

    blended = sliding_window_predict(volume, moments, WINDOW, overlap=overlap, blending=blending)
    epistemic = np.maximum(blended[..., 2] - blended[..., 0] ** 2, 0)
    s = UNITS.scale
    np.testing.assert_allclose(served["mean"], blended[..., 0] * s + UNITS.offset, rtol=0, atol=2e-5 * s)
    np.testing.assert_allclose(served["aleatoric_std"], np.sqrt(blended[..., 1]) * s, rtol=1e-4)
    np.testing.assert_allclose(served["epistemic_std"], np.sqrt(epistemic) * s, rtol=1e-3, atol=2e-3 * s)
    assert served["epistemic_std"].max() > 1.0  # windows disagree somewhere: the spread term is exercised
    local = to_target_units(
        mc_predict_volume(
            model, volume, "normal", mc_samples=1, window=WINDOW, overlap=overlap, blending=blending
        ),
        UNITS,
    )
    for key, value in local.items():
        np.testing.assert_allclose(served[key], value, rtol=1e-4, atol=2e-5 * s, err_msg=key)


def test_two_dimensional_model_gets_squeezed_windows(tmp_path):
    model = _model(rank=2)
    export_saved_model(model, tmp_path / "m", family="normal", mc_samples=1)
    client = ServingClient("http://h:1", "m", transport=saved_model_transport(tmp_path / "m"))
    volume = _volume((11, 9, 3))
    served = serve_volume(client, volume, (8, 8, 1), spatial_rank=2, blending="hann")

    def loc(batch):
        return model(batch[:, :, :, 0], training=False).numpy()[:, :, :, np.newaxis, :1]

    expected = sliding_window_predict(volume, loc, (8, 8, 1), blending="hann")[..., 0]
    np.testing.assert_allclose(served["mean"], expected, atol=1e-5)
    with pytest.raises(ValueError, match="size 1"):
        serve_volume(client, volume, (8, 8, 8), spatial_rank=2)


@pytest.mark.slow  # building MultiRes takes ~10 s on the shared CPUs
def test_multires_requests_carry_the_coarse_levels(tmp_path):
    from tfuq.networks import MultiRes

    keras.utils.set_random_seed(2)
    model = MultiRes(
        (8, 8, 8, 1),
        family="normal",
        factors=(1, 2),
        base_filters=2,
        blocks_per_stack=1,
        branch_filters=(4, 4, 4),
    )
    export_saved_model(model, tmp_path / "m", family="normal", mc_samples=1, names=["windows", "windows_x2"])
    inner = saved_model_transport(tmp_path / "m")
    requests = []

    def recording(url, body):
        requests.append(decode_request(body)[1])
        return inner(url, body)

    volume = _volume((12, 8, 8))
    client = ServingClient("http://h:1", "m", transport=recording)
    served = serve_volume(client, volume, WINDOW, factors=(1, 2), batch_size=8, blending="constant")
    grid = window_grid((12, 8, 8), WINDOW, 0.5)
    padded = pad_volume(volume, grid.padding)
    origins = grid.origins
    assert len(requests) == 1 and len(requests[0]["windows_x2"]) == len(origins)
    # the coarse level is cut from the volume around each window, padded with its minimum (as infer does)
    for k, origin in enumerate(origins):
        expected = multires_windows(volume, origin, WINDOW, (1, 2), mode="minimum", cval=volume.min())[1]
        np.testing.assert_array_equal(np.asarray(requests[0]["windows_x2"][k], np.float32), expected)
    # windows at x = 0 and 4 (stride 4): with constant blending each voxel's mean averages the windows
    # covering it
    answers = model(
        [np.stack([padded[grid.slices(o)] for o in origins]), np.asarray(requests[0]["windows_x2"])]
    )
    loc = answers.numpy()[..., 0]
    np.testing.assert_allclose(served["mean"][0], loc[0][0], atol=1e-5)
    np.testing.assert_allclose(served["mean"][5], (loc[0][5] + loc[1][1]) / 2, atol=1e-5)
    np.testing.assert_allclose(served["mean"][11], loc[1][7], atol=1e-5)


# [INFERENCE] border on the served path. Oracle: a fake server whose every map is exact except within
# `border` voxels of its window edges (built with NumPy from the request's window shape) must give the
# exact maps with the border and wrong ones without it.
WRONG = 100.0


def _edge_mask(window: tuple[int, ...], border: tuple[int, ...]) -> np.ndarray:
    """True within ``border`` of a window edge: the complement of the window's centre box."""
    centre = np.zeros(window, bool)
    centre[tuple(slice(b, w - b) for w, b in zip(window, border))] = True
    return ~centre


def _edge_wrong_server(border: tuple[int, ...]):
    """Answers mean x + 1, epistemic std 0.5, aleatoric |x| + 0.1 (+ WRONG at edges) and, as a
    recalibrated SavedModel does, the interval mean - 1.5 total_std, mean + 2 total_std."""

    def transport(url, body):
        _, inputs = decode_request(body)
        x = np.asarray(inputs["windows"], np.float64)[..., 0]
        edge = WRONG * np.broadcast_to(_edge_mask(x.shape[1:], border), x.shape)
        aleatoric = np.abs(x) + 0.1 + edge
        epistemic = 0.5 + edge
        mean, total = x + 1.0 + edge, np.sqrt(epistemic**2 + aleatoric**2)
        return encode_response(
            {
                "mean": mean,
                "epistemic_std": epistemic,
                "aleatoric_std": aleatoric,
                "total_std": total,
                "lower95": mean - 1.5 * total,
                "upper95": mean + 2.0 * total,
            }
        )

    return transport


@pytest.mark.parametrize(
    ("shape", "window", "border", "rank", "served_border"),
    [
        ((13, 10, 9), (8, 8, 6), (2, 3, 1), 3, (2, 3, 1)),
        ((5, 4, 3), (8, 8, 6), (1, 2, 2), 3, (1, 2, 2)),  # smaller than the window
        ((11, 9, 3), (8, 8, 1), 2, 2, (2, 2)),  # 2D model: one int, the slice axis keeps its voxel
    ],
)
def test_served_volume_drops_the_border(shape, window, border, rank, served_border):
    volume = _volume(shape, seed=3)
    client = ServingClient("http://h:1", "m", transport=_edge_wrong_server(served_border))
    options = {"spatial_rank": rank, "overlap": 0.5, "batch_size": 3}
    served = serve_volume(client, volume, window, border=border, **options)
    x = volume[..., 0].astype(np.float64)
    expected = {
        "mean": x + 1.0,
        "epistemic_std": np.full(shape, 0.5),
        "aleatoric_std": np.abs(x) + 0.1,
        "total_std": np.sqrt(0.25 + (np.abs(x) + 0.1) ** 2),
    }
    expected["lower95"] = expected["mean"] - 1.5 * expected["total_std"]
    expected["upper95"] = expected["mean"] + 2.0 * expected["total_std"]
    assert sorted(served) == sorted(expected)
    for key, value in expected.items():
        assert served[key].shape == shape and served[key].dtype == np.float32
        np.testing.assert_allclose(served[key], value, rtol=1e-5, atol=1e-5, err_msg=key)
    plain = serve_volume(client, volume, window, **options)
    for key in ("mean", "lower95"):
        assert np.abs(plain[key] - expected[key]).max() > WRONG / 2, key
    assert plain["epistemic_std"].max() > WRONG / 4  # windows disagree where one is wrong


def test_served_volume_with_border_equals_local_mc_inference(deterministic):
    # The exported model against mc_predict_volume (T = 1, deterministic) with the same border.
    model, path = deterministic
    volume = _volume((13, 10, 6), seed=4)
    client = ServingClient("http://unused:8501", "m", transport=saved_model_transport(path))
    served = serve_volume(client, volume, WINDOW, border=(2, 3, 1), blending="hann", batch_size=4)
    local = to_target_units(
        mc_predict_volume(
            model, volume, "normal", mc_samples=1, window=WINDOW, border=(2, 3, 1), blending="hann"
        ),
        UNITS,
    )
    s = UNITS.scale
    for key, value in local.items():
        np.testing.assert_allclose(served[key], value, rtol=1e-4, atol=2e-5 * s, err_msg=key)
    plain = serve_volume(client, volume, WINDOW, blending="hann", batch_size=4)
    assert np.abs(plain["mean"] - served["mean"]).max() > 1e-3 * s  # the border changed the maps
    with pytest.raises(ValueError, match=r"\[INFERENCE\] border"):
        serve_volume(client, volume, WINDOW, border=4)
