"""Uncertainty from samples: variance and entropy decompositions, propagation, ensembles."""

from tfuq.inference.decomposition import (
    ALEATORIC_VAR,
    DECOMPOSITION_KEYS,
    EPISTEMIC_VAR,
    MEAN,
    TOTAL_VAR,
    check_param_samples,
    decompose,
    decompose_moments,
    member_moments,
)
from tfuq.inference.ensemble import (
    BETWEEN_MEMBER_VAR,
    ENSEMBLE_KEYS,
    WITHIN_MEMBER_VAR,
    ensemble_decompose,
)
from tfuq.inference.information import (
    ENTROPY_KEYS,
    ENTROPY_METHODS,
    EXPECTED_ENTROPY,
    MUTUAL_INFORMATION,
    TOTAL_ENTROPY,
    entropy,
    entropy_decomposition,
    expected_entropy,
    mixture_entropy,
    moment_matched_entropy,
)
from tfuq.inference.propagation import propagate, region_mean
from tfuq.inference.streaming import (
    MomentState,
    StreamingDecomposition,
    finalize,
    init_state,
    merge_states,
    update_state,
)

__all__ = [
    "ALEATORIC_VAR",
    "BETWEEN_MEMBER_VAR",
    "DECOMPOSITION_KEYS",
    "ENSEMBLE_KEYS",
    "ENTROPY_KEYS",
    "ENTROPY_METHODS",
    "EPISTEMIC_VAR",
    "EXPECTED_ENTROPY",
    "MEAN",
    "MUTUAL_INFORMATION",
    "TOTAL_ENTROPY",
    "TOTAL_VAR",
    "WITHIN_MEMBER_VAR",
    "MomentState",
    "StreamingDecomposition",
    "check_param_samples",
    "decompose",
    "decompose_moments",
    "ensemble_decompose",
    "entropy",
    "entropy_decomposition",
    "expected_entropy",
    "finalize",
    "init_state",
    "member_moments",
    "merge_states",
    "mixture_entropy",
    "moment_matched_entropy",
    "propagate",
    "region_mean",
    "update_state",
]
