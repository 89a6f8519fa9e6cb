"""Layers: distribution heads, concrete and MC dropout, the MC-sampling switch, native dilated convs."""

from tfuq.layers.concrete_dropout import (
    ConcreteDropout,
    ConcreteSpatialDropout2D,
    ConcreteSpatialDropout3D,
    concrete_dropout_mask,
    concrete_dropout_regularizer,
)
from tfuq.layers.dilated_conv import DilatedConv2D, DilatedConv3D
from tfuq.layers.distribution_head import DistributionHead
from tfuq.layers.mc_dropout import MCDropout, MCSpatialDropout2D, MCSpatialDropout3D
from tfuq.layers.mc_sampling import (
    MC_ATTRIBUTE,
    iter_layers,
    mc_sampling,
    reset_compiled_functions,
    set_mc_sampling,
    stochastic_layers,
)

__all__ = [
    "MC_ATTRIBUTE",
    "ConcreteDropout",
    "ConcreteSpatialDropout2D",
    "ConcreteSpatialDropout3D",
    "DilatedConv2D",
    "DilatedConv3D",
    "DistributionHead",
    "MCDropout",
    "MCSpatialDropout2D",
    "MCSpatialDropout3D",
    "concrete_dropout_mask",
    "concrete_dropout_regularizer",
    "iter_layers",
    "mc_sampling",
    "reset_compiled_functions",
    "set_mc_sampling",
    "stochastic_layers",
]
