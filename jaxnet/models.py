"""Ready-made networks: Keras's simple convnet and He et al. (2016)'s CIFAR ResNets.

Both take uint8 images as a dataset stores them, (height, width) for grey images or
(height, width, channels), and scale them to [0, 1] inside the network. Each is an ordinary
composition of layers (``summary`` lists every one, ``to_config`` rebuilds it).
"""

from __future__ import annotations

from jaxnet import _checks
from jaxnet.augment import random_crop, random_flip
from jaxnet.combinators import residual, serial
from jaxnet.conv import conv2d, global_avg_pool, max_pool
from jaxnet.layers import activation, dense, dropout, flatten, rescale, reshape
from jaxnet.norm import batch_norm


def _image_input(image_shape) -> list:
    """The layers that bring examples of ``image_shape`` to (height, width, channels)."""
    shape = tuple(int(d) for d in image_shape)
    if len(shape) == 2:
        return [reshape((*shape, 1))]
    if len(shape) == 3:
        return []
    raise ValueError(f"image_shape: expected (height, width) or (height, width, channels), "
                     f"got {shape}")


def keras_convnet(num_classes: int = 10, image_shape=(28, 28)):
    """keras.io's "Simple MNIST convnet": Conv(32, 3x3, relu) -> MaxPool(2) -> Conv(64, 3x3,
    relu) -> MaxPool(2) -> Flatten -> Dropout(0.5) -> Dense(num_classes), as logits (34,826
    parameters for 28x28 grey images and 10 classes).

    Example:
        >>> import jaxnet as jn
        >>> net = keras_convnet()
        >>> jn.count_params(net.init(__import__("jax").random.key(0), (28, 28)))
        34826
    """
    num_classes = _checks.positive_int("num_classes", num_classes)
    head = _image_input(image_shape)
    return serial(*head, rescale(1 / 255),
                  conv2d(32, 3, activation="relu"), max_pool(2),
                  conv2d(64, 3, activation="relu"), max_pool(2),
                  flatten(), dropout(0.5), dense(num_classes))


def _conv_bn(filters: int, strides: int = 1):
    return [conv2d(filters, 3, strides=strides, padding="same", use_bias=False), batch_norm()]


def resnet(depth: int = 20, num_classes: int = 10, image_shape=(32, 32, 3), *,
           widths=(16, 32, 64), augment: bool = False):
    """He et al. (2016, section 4.2)'s CIFAR-10 ResNet of ``depth = 6n + 2`` layers.

    A 3x3 convolution of ``widths[0]`` filters, then three stages of ``n`` residual blocks
    (two 3x3 convolutions, each with batch normalization, ReLU after the sum) of 16, 32 and 64
    filters, the second and third stages starting with stride 2, then global average pooling
    and a dense layer to logits. Where a block changes the shape, its shortcut is a 1x1
    convolution with batch normalization (the paper's option B; its CIFAR networks use A,
    zero padding). Convolutions before batch normalization have no bias.

    Args:
        depth: 6n + 2: 8, 14, 20 (0.27 M parameters), 32, 44, 56, 110.
        num_classes: outputs.
        image_shape: the examples' shape; grey images (h, w) get a channel axis.
        widths: filters of the three stages.
        augment: start with :func:`~jaxnet.augment.random_crop` (4 pixels) and
            :func:`~jaxnet.augment.random_flip`, active in training only (the paper's
            CIFAR-10 augmentation).
    """
    depth = _checks.positive_int("depth", depth)
    if depth < 8 or (depth - 2) % 6:
        raise ValueError(f"depth: expected 6n + 2 with n >= 1 (8, 14, 20, 32, ...), got {depth}")
    num_classes = _checks.positive_int("num_classes", num_classes)
    if len(widths) != 3:
        raise ValueError(f"widths: expected the filters of 3 stages, got {widths!r}")
    head = _image_input(image_shape)
    layers = [*head, *([random_crop(4), random_flip()] if augment else []), rescale(1 / 255),
              *_conv_bn(widths[0]), activation("relu")]
    n, channels = (depth - 2) // 6, widths[0]
    for stage, filters in enumerate(widths):
        for block in range(n):
            strides = 2 if stage > 0 and block == 0 else 1
            shortcut = None
            if strides != 1 or filters != channels:
                shortcut = serial(conv2d(filters, 1, strides=strides, use_bias=False),
                                  batch_norm())
            layers += [residual(*_conv_bn(filters, strides), activation("relu"),
                                *_conv_bn(filters), shortcut=shortcut), activation("relu")]
            channels = filters
    return serial(*layers, global_avg_pool(), dense(num_classes))
