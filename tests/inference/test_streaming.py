from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from tfuq.inference import (
    ALEATORIC_VAR,
    DECOMPOSITION_KEYS,
    EPISTEMIC_VAR,
    MEAN,
    TOTAL_VAR,
    StreamingDecomposition,
    decompose,
    finalize,
    init_state,
    merge_states,
    update_state,
)

SIZES = {"normal": 2, "laplace": 2, "generalized_normal": 3}


def _params(family, num, shape=(3, 4), seed=0, offset=50.0, spread=5.0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    params = rng.normal(size=(num, *shape, SIZES[family]))
    params[..., 0] = offset + spread * params[..., 0]
    return params.astype(dtype)


@pytest.mark.parametrize("family", sorted(SIZES))
@pytest.mark.parametrize("batch", [1, 3, 12])
def test_streaming_equals_batch_float64(family, batch):
    params = _params(family, 12)
    acc = StreamingDecomposition(family)
    for start in range(0, 12, batch):
        acc.update(params[start : start + batch])
    assert acc.count == 12
    streamed = acc.result()
    reference = decompose(family, params)
    for key in DECOMPOSITION_KEYS:
        assert streamed[key].dtype == tf.float64
        np.testing.assert_allclose(streamed[key], reference[key], rtol=1e-6, atol=0)


def test_uneven_batches():
    params = _params("normal", 10)
    acc = StreamingDecomposition("normal")
    for chunk in (params[:3], params[3:6], params[6:9], params[9:]):
        acc.update(chunk)
    reference = decompose("normal", params)
    for key in DECOMPOSITION_KEYS:
        np.testing.assert_allclose(acc.result()[key], reference[key], rtol=1e-10)


def test_large_offset_float32_is_stable():
    # CT-like values: mean 1e4, spread 1. The naive E[x^2] - E[x]^2 fails here.
    params = _params("normal", 64, shape=(50,), offset=1e4, spread=1.0, dtype=np.float32)
    acc = StreamingDecomposition("normal")
    for t in range(64):
        acc.update(params[t : t + 1])
    loc = params[..., 0].astype(np.float64)
    truth = loc.var(axis=0)
    np.testing.assert_allclose(acc.result()[EPISTEMIC_VAR], truth, rtol=2e-3)
    naive = np.mean(params[..., 0] ** 2, axis=0) - np.mean(params[..., 0], axis=0) ** 2
    assert np.max(np.abs(naive / truth - 1.0)) > 0.1  # the test can tell a bad algorithm


def test_large_offset_float64_is_stable():
    params = _params("laplace", 50, shape=(20,), offset=1e8, spread=1e-2)
    acc = StreamingDecomposition("laplace")
    for t in range(0, 50, 7):
        acc.update(params[t : t + 7])
    truth = np.var(params[..., 0], axis=0)
    np.testing.assert_allclose(acc.result()[EPISTEMIC_VAR], truth, rtol=1e-6)


def test_functional_core_in_tf_while_loop():
    params = tf.constant(_params("generalized_normal", 9, shape=(2, 3), seed=5))

    @tf.function
    def run(stack):
        def body(t, state):
            return t + 1, update_state("generalized_normal", state, stack[t : t + 1])

        state = init_state(tf.shape(stack)[1:-1], tf.float64)
        _, state = tf.while_loop(lambda t, s: t < tf.shape(stack)[0], body, (tf.constant(0), state))
        return finalize(state)

    out = run(params)
    reference = decompose("generalized_normal", params)
    for key in DECOMPOSITION_KEYS:
        np.testing.assert_allclose(out[key], reference[key], rtol=1e-10)


def test_merge_states_is_order_free_and_empty_neutral():
    params = _params("normal", 8, shape=(5,))
    a = update_state("normal", init_state((5,), tf.float64), params[:5])
    b = update_state("normal", init_state((5,), tf.float64), params[5:])
    ab, ba = finalize(merge_states(a, b)), finalize(merge_states(b, a))
    reference = decompose("normal", params)
    for key in DECOMPOSITION_KEYS:
        np.testing.assert_allclose(ab[key], reference[key], rtol=1e-10)
        np.testing.assert_allclose(ba[key], reference[key], rtol=1e-10)
    same = merge_states(init_state((5,), tf.float64), a)
    np.testing.assert_allclose(same.m2, a.m2)
    np.testing.assert_allclose(same.mean, a.mean)


def test_single_sample_and_total_identity():
    params = _params("normal", 1, shape=(4,))
    out = StreamingDecomposition("normal").update(params).result()
    np.testing.assert_array_equal(out[EPISTEMIC_VAR], 0.0)
    np.testing.assert_allclose(out[TOTAL_VAR], out[ALEATORIC_VAR])
    np.testing.assert_allclose(out[MEAN], params[0, :, 0])


def test_errors():
    acc = StreamingDecomposition("normal")
    with pytest.raises(ValueError, match="No sample"):
        acc.result()
    with pytest.raises(ValueError, match="No sample"):
        finalize(init_state((2,)))
    acc.update(np.zeros((2, 3, 2)))
    with pytest.raises(ValueError, match="spatial shape"):
        acc.update(np.zeros((2, 4, 2)))
    with pytest.raises(ValueError, match="channels"):
        acc.update(np.zeros((2, 3, 3)))
    with pytest.raises(ValueError, match="floating"):
        StreamingDecomposition("normal", dtype="int32")
    with pytest.raises(ValueError, match="Unknown"):
        StreamingDecomposition("cauchy")
    acc.reset()
    assert acc.count == 0
    assert acc.get_config() == {"family": "normal", "dtype": None}
