"""Distribution families: head channels -> ``tfp.distributions`` objects."""

from tfuq.distributions.family import (
    BETA_MAX,
    BETA_MIN,
    FAMILIES,
    SCALE_EPS,
    check_family,
    constrain,
    make_distribution,
    mean,
    params_size,
    stddev,
    unconstrain,
    variance,
)

__all__ = [
    "BETA_MAX",
    "BETA_MIN",
    "FAMILIES",
    "SCALE_EPS",
    "check_family",
    "constrain",
    "make_distribution",
    "mean",
    "params_size",
    "stddev",
    "unconstrain",
    "variance",
]
