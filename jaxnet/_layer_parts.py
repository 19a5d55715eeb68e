"""Pieces shared by the modules that define layers (layers, conv, combinators)."""

from __future__ import annotations


def no_params(key, input_shape):
    """``init`` of a layer without parameters: theta is ``{}``."""
    del key, input_shape
    return {}


def name_or_none(value):
    """A config entry for a name-or-function argument: the name, None, or ``"<function>"``
    (a custom function has no name to store, and :func:`jaxnet.network.from_config` says so)."""
    return value if value is None or isinstance(value, str) else "<function>"


def check_images(layer: str, x, channels: int | None = None) -> None:
    """Raise a ValueError naming ``layer`` unless ``x`` is a (batch, height, width, channels)
    batch (with ``channels`` channels, when given); a 3-D batch is told to add the channel
    axis."""
    if x.ndim == 3 and channels is not None and x.shape[-1] == channels:
        raise ValueError(f"{layer}: expected a batch of shape (batch, height, width, channels), "
                         f"got {tuple(x.shape)}: if x is one image, add the batch axis "
                         f"(x[None]); jaxnet.predict takes one example as it is")
    if x.ndim == 3:
        raise ValueError(f"{layer}: expected a batch of shape (batch, height, width, channels), "
                         f"got {tuple(x.shape)}: add the channel axis (x[..., None])")
    if x.ndim != 4 or (channels is not None and x.shape[-1] != channels):
        want = "channels" if channels is None else str(channels)
        raise ValueError(f"{layer}: expected a batch of shape (batch, height, width, {want}), "
                         f"got {tuple(x.shape)}")


def require_key(layer: str, key) -> None:
    """A stochastic layer in training needs an explicit PRNG key."""
    if key is None:
        raise ValueError(f"{layer}: train=True needs an explicit PRNG key (key=...)")
