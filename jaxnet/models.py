"""Ready-made networks: Keras's simple convnet, He et al. (2016)'s CIFAR ResNets, the
deep MLPs of the depth study (plain, residual, normalized, ReZero), and a GPT-2-style
transformer language model and a text classifier.

The image models take uint8 images as a dataset stores them, (height, width) for grey images or
(height, width, channels), and scale them to [0, 1] inside the network. Each is an ordinary
composition of layers (``summary`` lists every one, ``to_config`` rebuilds it).
"""

from __future__ import annotations

from jaxnet import _checks, activations
from jaxnet import init as initializers
from jaxnet.augment import random_crop, random_flip
from jaxnet.combinators import residual, serial
from jaxnet.conv import conv2d
from jaxnet.layers import activation as activation_layer
from jaxnet.layers import (
    dense,
    dropout,
    flatten,
    learnable_scale,
    mlp,
    rescale,
    reshape,
)
from jaxnet.layers import dropout as dropout_layer
from jaxnet.norm import batch_norm, layer_norm
from jaxnet.pooling import global_avg_pool, max_pool

ARCHS = ("plain", "plain-bn", "plain-ln", "residual", "residual-bn", "residual-ln", "rezero")
"""The architectures of :func:`deep_mlp` (and of the depth study's
``--archs``)."""
_NORMS = {"bn": batch_norm, "ln": layer_norm}


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

    Examples:
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


def _conv_bn(filters: int, strides: int = 1, momentum: float = 0.99):
    return [conv2d(filters, 3, strides=strides, padding="same", use_bias=False),
            batch_norm(momentum)]


def resnet(depth: int = 20, num_classes: int = 10, image_shape=(32, 32, 3), *,
           widths=(16, 32, 64), augment: bool = False, shortcuts: bool = True,
           bn_momentum: float = 0.99):
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
        shortcuts: False gives the paper's *plain* network of the same depth: the same
            layers without the shortcut connections (its Fig. 6, left).
        bn_momentum: every batch normalization's ``momentum`` (Keras's 0.99 by default;
            PyTorch's default is 0.9 in these terms, whose running statistics settle in
            tens of steps rather than hundreds: the choice for short runs).
    """
    depth = _checks.positive_int("depth", depth)
    if depth < 8 or (depth - 2) % 6:
        raise ValueError(f"depth: expected 6n + 2 with n >= 1 (8, 14, 20, 32, ...), got {depth}")
    num_classes = _checks.positive_int("num_classes", num_classes)
    if len(widths) != 3:
        raise ValueError(f"widths: expected the filters of 3 stages, got {widths!r}")
    head = _image_input(image_shape)
    layers = [*head, *([random_crop(4), random_flip()] if augment else []), rescale(1 / 255),
              *_conv_bn(widths[0], momentum=bn_momentum), activation_layer("relu")]
    n, channels = (depth - 2) // 6, widths[0]
    for stage, filters in enumerate(widths):
        for block in range(n):
            strides = 2 if stage > 0 and block == 0 else 1
            branch = [*_conv_bn(filters, strides, bn_momentum), activation_layer("relu"),
                      *_conv_bn(filters, momentum=bn_momentum)]
            if not shortcuts:
                block_layer = serial(*branch)
            else:
                shortcut = None
                if strides != 1 or filters != channels:
                    shortcut = serial(conv2d(filters, 1, strides=strides, use_bias=False),
                                      batch_norm(bn_momentum))
                block_layer = residual(*branch, shortcut=shortcut)
            layers += [block_layer, activation_layer("relu")]
            channels = filters
    return serial(*layers, global_avg_pool(), dense(num_classes))


def deep_mlp(arch: str, depth: int, num_classes: int = 10, *, width: int = 64,
             activation: str = "relu", init=None, bias_init="zeros",
             input_scale: float | None = 1 / 255):
    """An MLP of ``depth`` hidden layers of ``width`` units in one of :data:`ARCHS`.

    Every architecture has ``depth`` hidden weight layers and a linear output layer (logits),
    after ``flatten`` and ``rescale(input_scale)``. Writing ``a`` for the activation and
    ``W`` for a dense layer (weights initialised by ``init``, default per activation, and
    biases by ``bias_init``):

    - ``plain``: ``h = a(W h)``, the seed's MLP (:func:`~jaxnet.layers.mlp`);
    - ``plain-bn`` / ``plain-ln``: ``h = a(norm(W h))``, batch or layer normalization between
      the product and the activation (Ioffe & Szegedy 2015's placement);
    - ``residual``: a first layer ``h = a(W h)`` brings the input to ``width``, then
      ``depth - 1`` blocks ``h = h + a(W h)`` (He et al. 2016's identity shortcuts, no
      normalization: the sum grows with depth);
    - ``residual-bn`` / ``residual-ln``: the same with the branch normalized first,
      ``h = h + a(W norm(h))`` (pre-normalization, He et al. 2016b), and a last ``norm``
      before the output layer;
    - ``rezero``: blocks ``h = h + g a(W h)`` with one learnable scalar ``g`` per block,
      starting at 0 (Bachlechner et al. 2020; :func:`~jaxnet.layers.learnable_scale`).

    Examples:
        >>> import jax
        >>> net = deep_mlp("residual-ln", 4, width=16)
        >>> len(net.init(jax.random.key(0), (28, 28)))  # flatten, rescale, 1 + 3 blocks, norm, out
        8
    """
    _checks.one_of("arch", arch, ARCHS)
    depth = _checks.positive_int("depth", depth)
    num_classes = _checks.positive_int("num_classes", num_classes)
    width = _checks.positive_int("width", width)
    act = activations.canonical(activation)
    activations.get(act)  # a clear error for an unknown name
    if act == "softmax":
        raise ValueError("activation: softmax is for outputs, not hidden layers")
    init = init if init is not None else initializers.default_for(act)
    kind, _, norm_name = arch.partition("-")
    if kind == "plain" and not norm_name:
        return mlp([width] * depth + [num_classes], act, init=init, bias_init=bias_init,
                   flatten_input=True, input_scale=input_scale)
    norm = _NORMS.get(norm_name)
    head = [flatten(), *([rescale(input_scale)] if input_scale is not None else [])]
    if kind == "plain":
        hidden = [serial(dense(width, init=init, bias_init=bias_init), norm(),
                         activation_layer(act))
                  for _ in range(depth)]
        tail = []
    else:
        def branch():
            return [*([norm()] if norm else []),
                    dense(width, act, init=init, bias_init=bias_init)]
        gate = [learnable_scale(0.0)] if kind == "rezero" else []
        hidden = [dense(width, act, init=init, bias_init=bias_init)]
        hidden += [residual(*branch(), *gate) for _ in range(depth - 1)]
        tail = [norm()] if norm else []
    return serial(*head, *hidden, *tail, dense(num_classes, init=init, bias_init=bias_init))


def transformer_lm(vocab_size: int, *, depth: int, width: int, num_heads: int, context: int,
                   ffn_units: int | None = None, activation: str = "gelu", norm: str = "pre",
                   dropout: float = 0.0, rope: bool = False, residual_scale=None):
    """A decoder-only transformer language model (GPT-2's recipe, as nanoGPT builds it):
    token ids (batch, T <= context) -> next-token logits (batch, T, vocab_size).

    ``embedding(vocab_size, width)`` and learned positions (GPT-2's N(0, 0.02^2)
    initialisation; with ``rope=True`` rotary positions in every attention instead, which
    then refuses sequences longer than ``context``), ``depth``
    causal :func:`~jaxnet.transformer.transformer_block` s (pre-LN by default, FFN ``4 *
    width`` GELU, attention projections without biases), a final layer normalization (pre-LN
    only) and a linear output layer without bias. ``fit(net, x, y)`` with ``x`` the (N, T)
    windows and ``y`` the same shifted by one token (:func:`jaxnet.text.next_token_windows`)
    trains it on the per-token cross-entropy.

    Examples:
        >>> import jax
        >>> net = transformer_lm(81, depth=4, width=128, num_heads=4, context=128)
        >>> from jaxnet.network import count_params
        >>> count_params(net.init(jax.random.key(0), (128,)))  # the benchmark's model
        828416
    """
    from jaxnet.transformer import transformer_block

    vocab_size = _checks.positive_int("vocab_size", vocab_size)
    depth = _checks.positive_int("depth", depth)
    width = _checks.positive_int("width", width)
    context = _checks.positive_int("context", context)
    blocks = [transformer_block(num_heads, width=width, ffn_units=ffn_units,
                                activation=activation, norm=norm, dropout=dropout, causal=True,
                                rope=rope, attention_bias=False, residual_scale=residual_scale,
                                # with rope no positions table holds the context: the
                                # attention refuses longer sequences itself
                                max_length=context if rope else None)
              for _ in range(depth)]
    return language_model(blocks, vocab_size, width=width, context=context, positions=not rope,
                          final_norm=norm == "pre", dropout=dropout)


def language_model(blocks, vocab_size: int, *, width: int, context: int,
                   positions: bool = True, final_norm: bool = True, dropout: float = 0.0):
    """GPT-2's language model around a stack of ``blocks`` on (batch, T, width): token
    embeddings and learned positions (both N(0, 0.02^2); ``positions=False`` for rotary
    positions inside the attention), dropout if ``dropout``, the blocks, a final layer norm
    if ``final_norm`` (pre-LN stacks) and a linear read-out without bias to ``vocab_size``
    logits. :func:`transformer_lm` and :func:`jaxnet.transformer_archs.deep_transformer`
    build theirs with it."""
    from jaxnet.embeddings import embedding, positional_embedding

    head = [embedding(vocab_size, width, init="gpt2_normal")]
    if positions:
        head.append(positional_embedding(context))
    if dropout:
        head.append(dropout_layer(dropout))
    tail = [layer_norm(1e-5)] if final_norm else []
    return serial(*head, *blocks, *tail, dense(vocab_size, use_bias=False, init="gpt2_normal"))


def text_classifier(vocab_size: int, num_classes: int, *, encoder: str = "lstm",
                    width: int = 64, depth: int = 1, num_heads: int = 4,
                    max_length: int = 512, dropout: float = 0.0):
    """A text classifier over padded token ids (batch, T) -> logits (batch, num_classes):
    ``embedding(vocab_size, width, mask_zero=True)`` (id 0 is padding), an encoder, pooling
    over the valid positions and a linear output layer.

    ``encoder="lstm"``: ``depth`` LSTM layers of ``width`` units (the last one's final state
    is the pooling: the state after each sequence's last valid token); ``"gru"`` the same with
    GRUs; ``"transformer"``: learned positions (sequences up to ``max_length``) and ``depth``
    bidirectional (non-causal) pre-LN :func:`~jaxnet.transformer.transformer_block` s, then
    a layer norm and the mean over valid positions.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> net = text_classifier(100, 2, encoder="transformer", width=16, num_heads=2)
        >>> theta = net.init(jax.random.key(0), (12,))
        >>> net.apply(jnp.ones((3, 12), jnp.int32), theta).shape
        (3, 2)
    """
    from jaxnet.embeddings import embedding, positional_embedding
    from jaxnet.recurrent import gru, lstm
    from jaxnet.transformer import transformer_block

    _checks.one_of("encoder", encoder, ("lstm", "gru", "transformer"))
    vocab_size = _checks.positive_int("vocab_size", vocab_size)
    num_classes = _checks.positive_int("num_classes", num_classes)
    width = _checks.positive_int("width", width)
    depth = _checks.positive_int("depth", depth)
    layers = [embedding(vocab_size, width, mask_zero=True)]
    if encoder == "transformer":
        layers += [positional_embedding(_checks.positive_int("max_length", max_length))]
        layers += [transformer_block(num_heads, width=width, dropout=dropout)
                   for _ in range(depth)]
        layers += [layer_norm(1e-5), global_avg_pool()]
    else:
        recurrent = lstm if encoder == "lstm" else gru
        layers += [recurrent(width, return_sequences=i < depth - 1) for i in range(depth)]
        if dropout:
            layers.append(dropout_layer(dropout))
    return serial(*layers, dense(num_classes))
