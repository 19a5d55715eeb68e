"""Image augmentation as layers that act only in training (Keras's ``RandomFlip`` and
``RandomCrop`` preprocessing layers).

They run inside the compiled training step, on the device, from the step's key (which
``fit`` derives from the epoch's key, as for dropout): the same seed gives the same augmented
batches, an interrupted and resumed run included. In inference (``evaluate``, ``predict``,
the default of ``apply``) they are the identity.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxnet import _checks
from jaxnet._layer_parts import check_images, no_params, require_key
from jaxnet._typing import Network
from jaxnet.network import register_layer


def random_flip() -> Network:
    """In training, mirror each image left-right with probability 1/2.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> x = jnp.arange(4.0).reshape(1, 1, 4, 1)
        >>> random_flip().apply(x, {}).ravel().tolist()  # inference: unchanged
        [0.0, 1.0, 2.0, 3.0]
    """

    def apply_fn(x, theta, *, key=None, train=False):
        if not train:
            return x
        require_key("random_flip", key)
        check_images("random_flip", x)
        flip = jax.random.bernoulli(key, 0.5, (x.shape[0], 1, 1, 1))
        return jnp.where(flip, x[:, :, ::-1], x)

    return Network(no_params, apply_fn, "random_flip", {}, stochastic=True)


def random_crop(padding: int = 4) -> Network:
    """In training, pad each image by ``padding`` pixels of zeros on every side and cut a
    window of its original size at a random offset (He et al. 2016's CIFAR-10 augmentation:
    ``padding=4``, 32x32 crops)."""
    padding = _checks.positive_int("padding", padding)

    def apply_fn(x, theta, *, key=None, train=False):
        if not train:
            return x
        require_key("random_crop", key)
        check_images("random_crop", x)
        n, h, w, c = x.shape
        padded = jnp.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
        offsets = jax.random.randint(key, (n, 2), 0, 2 * padding + 1)

        def crop(image, offset):
            return jax.lax.dynamic_slice(image, (offset[0], offset[1], 0), (h, w, c))

        return jax.vmap(crop)(padded, offsets)

    return Network(no_params, apply_fn, "random_crop", {"padding": padding}, stochastic=True)


register_layer("random_flip", random_flip)
register_layer("random_crop", random_crop)
