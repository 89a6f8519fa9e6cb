"""Text summary of the network a configuration builds (``tfuq info CONFIG``)."""

from __future__ import annotations

import keras

from tfuq.config import Config
from tfuq.distributions import params_size
from tfuq.networks.factory import build_discriminators, build_model, dropout_spec, input_geometry

__all__ = ["count_parameters", "summarize"]

#: Width of the Keras summary table.
_LINE_LENGTH = 110


def count_parameters(model: keras.Model) -> int:
    """All weights of ``model`` (trainable and not, e.g. BatchNorm moving statistics)."""
    return int(model.count_params())


def _keras_summary(model: keras.Model) -> list[str]:
    lines: list[str] = []
    model.summary(line_length=_LINE_LENGTH, print_fn=lambda text, line_break=True: lines.append(text))
    return [line.rstrip() for chunk in lines for line in chunk.splitlines()]


def summarize(config: Config, model: keras.Model | None = None) -> str:
    """The Keras summary of ``config``'s network, ending with ``parameters: <integer>``.

    Builds the model (and, for GANs, its discriminators) without data.

    Args:
        config: A loaded configuration.
        model: The generator, when already built or loaded (a ``keras:`` user model,
            :func:`tfuq.model_store.build_network`); None builds it.

    Returns:
        str: a header (network, input, family, dropout), the Keras summary
        table(s), then ``parameters: N`` with N the generator's weight count
        (discriminators are listed above it with their own counts).

    Raises:
        ConfigError: the configuration's network cannot be built.
        NotAvailableError: ``[NETWORK] name = keras:...``.
    """
    model = build_model(config) if model is None else model
    geometry = input_geometry(config)
    spec = dropout_spec(config)
    rate = f" rate {spec.rate:g}" if spec.kind == "mc" else ""
    lines = [
        f"network: {config.network.name} ({geometry.mode}, input {'x'.join(map(str, geometry.spatial))} "
        f"x {geometry.channels} channel(s))",
        f"family: {config.family} ({params_size(config.family)} parameter channel(s))",
        f"dropout: {spec.kind}{rate}",
        *_keras_summary(model),
    ]
    if config.network.name in ("pix2pix", "upgan"):
        for discriminator in build_discriminators(config):
            lines.extend(_keras_summary(discriminator))
            lines.append(f"{discriminator.name} parameters: {count_parameters(discriminator)}")
    lines.append(f"parameters: {count_parameters(model)}")
    return "\n".join(lines)
