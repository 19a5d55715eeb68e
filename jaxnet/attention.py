"""Multi-head self-attention on (batch, T, features), with causal masking, dropout on the
attention weights and rotary positions; the computation is chosen per backend at trace time.

``multi_head_attention(num_heads)`` projects each position to queries, keys and values (one
matrix multiply for all three), lets every query attend to the keys, and projects the heads'
outputs back to the input's width (Keras's ``MultiHeadAttention`` as self-attention, PyTorch's
``nn.MultiheadAttention`` with ``batch_first=True``).

How the attention itself runs:

- on a CPU (XLA:CPU), as explicit matrix multiplies and a softmax. With ``causal=True`` the
  queries are split into blocks and each block attends only to the keys at or before its
  last position, which skips the quarter of the scores a causal mask would discard: a
  training step's attention (forward and backward, 32 x 128 tokens, 4 heads of 32) took
  4.8 ms where ``jax.nn.dot_product_attention`` took 10.4 ms on this project's 2-core
  machine (PyTorch's fused CPU kernel: 6.9 ms);
- elsewhere, ``jax.nn.dot_product_attention``, with cuDNN's fused (flash) attention on a GPU
  where the dtype and head size allow it (:func:`implementation_for`), XLA's otherwise;
- with dropout on the attention weights in training, explicitly on every backend (no fused
  kernel takes it), with the same causal mask: masked weights are exactly 0 before and after
  dropout, so no dropout path can let a query see a later key (the bug of keras #23038).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from jaxnet import _checks, _lowering
from jaxnet import init as initializers
from jaxnet._layer_parts import name_or_none, require_key
from jaxnet._typing import Decoder, Network, Shape
from jaxnet.network import register_layer

#: Causal attention over at least this many positions runs as two query blocks on a CPU.
MIN_BLOCKED_LENGTH = 32


def implementation_for(backend: str, dtype, head_dim: int) -> str:
    """Which attention computation a backend gets: ``"blocks"`` (explicit, query blocks) on a
    CPU and for an ONNX graph (:mod:`jaxnet._lowering`); ``"cudnn"`` (fused flash attention)
    on a GPU for float16/bfloat16 and head sizes that are multiples of 8 up to 128, where
    cuDNN takes them; ``"xla"`` otherwise.

    Examples:
        >>> implementation_for("cpu", "float32", 32), implementation_for("gpu", "bfloat16", 64)
        ('blocks', 'cudnn')
    """
    if backend in ("cpu", _lowering.ONNX):  # ONNX: matrix multiplies and a softmax
        return "blocks"
    if (backend in ("gpu", "cuda") and jnp.dtype(dtype) in (jnp.float16, jnp.bfloat16)
            and head_dim % 8 == 0 and head_dim <= 128):
        return "cudnn"
    return "xla"


def rotary(x):
    """Rotary position embedding (RoPE, Su et al. 2021) of queries or keys (batch, T, heads,
    head_dim): the two halves of each head's vector, ``(a, b)``, at position ``t`` become
    ``(a cos(t w) - b sin(t w), b cos(t w) + a sin(t w))`` with frequencies
    ``w_i = 10000^(-i / (head_dim / 2))`` (GPT-NeoX's and LLaMA's split-halves layout), so a
    query-key product depends only on their distance.

    Examples:
        >>> import jax.numpy as jnp
        >>> x = jnp.ones((1, 3, 1, 2))
        >>> [round(float(v), 4) for v in rotary(x)[0, 1, 0]]  # cos 1 - sin 1, cos 1 + sin 1
        [-0.3012, 1.3818]
    """
    cos, sin = _rotary_tables(x.shape[1], x.shape[-1])
    return _rotate(x, jnp.asarray(cos, x.dtype), jnp.asarray(sin, x.dtype))


def _rotary_tables(length: int, d: int) -> tuple[np.ndarray, np.ndarray]:
    """cos and sin of :func:`rotary`'s angles at positions ``0 .. length - 1``, (length, 1,
    head_dim / 2), computed in float64."""
    if d % 2:
        raise ValueError(f"multi_head_attention: rope=True needs an even head size, got {d}")
    half = d // 2
    freq = np.exp(-math.log(10000.0) * np.arange(half) / half)
    angles = np.arange(length)[:, None] * freq[None, :]
    return np.cos(angles)[:, None, :], np.sin(angles)[:, None, :]


def _rotate(x, cos, sin):
    half = x.shape[-1] // 2
    a, b = x[..., :half], x[..., half:]
    return jnp.concatenate([a * cos - b * sin, b * cos + a * sin], axis=-1)


def _block_bounds(t: int, causal: bool) -> list[tuple[int, int]]:
    if not causal or t < MIN_BLOCKED_LENGTH:
        return [(0, t)]
    middle = t // 2
    return [(0, middle), (middle, t)]


def _weights_dropout(p, rate: float, key):
    keep = jax.random.bernoulli(key, 1.0 - rate, p.shape)
    return jnp.where(keep, p / (1.0 - rate), 0.0).astype(p.dtype)


def explicit_attention(q, k, v, *, causal: bool, dropout_rate: float = 0.0, key=None,
                       mask=None):
    """Attention as matrix multiplies and a softmax: ``softmax(q k^T / sqrt(d)) v`` per head,
    for (batch, T, heads, head_dim) queries, keys and values (without ``causal``, the keys
    and values may have another length than the queries: a decoding step's one query
    against its cache). ``causal`` lets position ``t``
    attend to keys ``<= t`` only (causal attention over long sequences runs as query blocks
    that skip the masked keys); ``dropout_rate`` > 0 drops attention weights with ``key``
    (inverted dropout: the kept ones are scaled by 1 / (1 - rate)). ``mask`` (batch, T):
    no query attends to a key where it is False; a query with no key left (every key it may
    see is padding) gets zeros, not NaN (PyTorch's SDPA) or a uniform average (JAX's)."""
    t, scale = q.shape[1], 1.0 / math.sqrt(q.shape[-1])
    bounds = _block_bounds(t, causal)
    keys = (jax.random.split(key, len(bounds)) if dropout_rate > 0 else [None] * len(bounds))
    q = q * jnp.asarray(scale, q.dtype)
    outs = []
    for (start, stop), block_key in zip(bounds, keys, strict=True):
        seen = stop if causal else k.shape[1]  # keys this block's queries may see
        s = jnp.einsum("bqhd,bkhd->bhqk", q[:, start:stop], k[:, :seen])
        allowed = (np.arange(seen)[None, :] <= np.arange(start, stop)[:, None] if causal
                   else np.ones((stop - start, seen), bool))
        if mask is not None:  # (batch, 1, 1, keys): padded keys are never attended to
            allowed = allowed & mask[:, None, None, :seen]
        if causal or mask is not None:
            s = jnp.where(allowed, s, jnp.finfo(s.dtype).min)
        p = jax.nn.softmax(s.astype(jnp.promote_types(s.dtype, jnp.float32)), axis=-1)
        if mask is not None:  # a query that may see no key at all: zeros
            p = jnp.where(jnp.any(allowed, axis=-1, keepdims=True), p, 0.0)
        p = p.astype(v.dtype)
        if dropout_rate > 0:
            p = _weights_dropout(p, dropout_rate, block_key)
        outs.append(jnp.einsum("bhqk,bkhd->bqhd", p, v[:, :seen]))
    return outs[0] if len(outs) == 1 else jnp.concatenate(outs, axis=1)


def attend(q, k, v, *, causal: bool, dropout_rate: float = 0.0, key=None, mask=None):
    """Self-attention of (batch, T, heads, head_dim) queries, keys and values, computed the
    way the backend runs best (module docstring); the same values on every path. ``mask``
    (batch, T) marks the valid keys (:func:`explicit_attention`)."""
    if dropout_rate > 0:
        return explicit_attention(q, k, v, causal=causal, dropout_rate=dropout_rate, key=key,
                                  mask=mask)
    backend = _lowering.current().target or jax.default_backend()
    how = implementation_for(backend, q.dtype, q.shape[-1])
    if how == "blocks":
        return explicit_attention(q, k, v, causal=causal, mask=mask)
    if mask is None:
        return jax.nn.dot_product_attention(q, k, v, is_causal=causal, implementation=how)
    out = jax.nn.dot_product_attention(q, k, v, mask=mask[:, None, None, :], is_causal=causal,
                                       implementation="xla" if how == "cudnn" else how)
    # a query that may see no valid key: zeros, as on the explicit path
    seen = jnp.cumsum(mask, axis=-1) > 0 if causal else jnp.any(mask, axis=-1, keepdims=True)
    return jnp.where(jnp.broadcast_to(seen, mask.shape)[:, :, None, None], out, 0.0)


def multi_head_attention(num_heads: int, *, key_dim: int | None = None, causal: bool = False,
                         dropout: float = 0.0, use_bias: bool = True, rope: bool = False,
                         max_length: int | None = None, init="glorot_uniform") -> Network:
    """Multi-head self-attention: (batch, T, width) -> (batch, T, width).

    theta is ``{"qkv": {"w": (width, 3 * heads * key_dim), "b"}, "out": {"w": (heads *
    key_dim, width), "b"}}``: the queries, keys and values of all heads from one matrix
    (columns: every head's queries, then keys, then values, PyTorch's ``in_proj_weight``
    transposed), the heads' outputs concatenated and projected back to ``width``.

    Args:
        num_heads: attention heads.
        key_dim: size of each head's queries and keys (and values); default ``width //
            num_heads``, for which ``num_heads`` must divide the width.
        causal: position ``t`` attends to positions ``<= t`` only (a language model). Every
            path that computes the attention applies it; nothing can turn it off silently.
        dropout: rate of dropout on the attention weights in training (needs a key; the
            causal mask still holds: a masked weight is 0 and stays 0).
        use_bias: biases in the projections.
        rope: rotary positions (:func:`rotary`) on queries and keys: position enters every
            product as a relative distance, and no positions layer is needed.
        max_length: the longest sequence accepted (a model's context, which a learned
            positions table would enforce); a longer one is a ValueError. None: any length.
        init: initialiser of the projection matrices.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> layer = multi_head_attention(4, causal=True)
        >>> theta = layer.init(jax.random.key(0), (10, 32))
        >>> layer.apply(jnp.ones((2, 10, 32)), theta).shape
        (2, 10, 32)
    """
    num_heads = _checks.positive_int("num_heads", num_heads)
    if key_dim is not None:
        key_dim = _checks.positive_int("key_dim", key_dim)
    rate = _checks.fraction("dropout", dropout)
    if not isinstance(causal, bool):
        raise TypeError(f"causal: expected True or False, got {causal!r}")
    if max_length is not None:
        max_length = _checks.positive_int("max_length", max_length)
    w_init = initializers.get(init)

    def check_length(t: int) -> None:
        if max_length is not None and t > max_length:
            raise ValueError(f"multi_head_attention: sequences of {t} positions are longer "
                             f"than max_length={max_length} (the model's context)")

    def head_dim(width: int) -> int:
        if key_dim is not None:
            return key_dim
        if width % num_heads:
            raise ValueError(f"multi_head_attention: num_heads={num_heads} does not divide the "
                             f"width {width}; give a width that it divides or key_dim=")
        return width // num_heads

    def init_fn(key, input_shape: Shape):
        if len(input_shape) != 2:
            raise ValueError(f"multi_head_attention: expected (batch, T, features), got "
                             f"(batch, {', '.join(map(str, input_shape))})")
        check_length(input_shape[0])
        width = input_shape[-1]
        inner = num_heads * head_dim(width)
        if rope and head_dim(width) % 2:
            raise ValueError(f"multi_head_attention: rope=True needs an even head size, got "
                             f"{head_dim(width)}")
        kq, ko = jax.random.split(key)
        theta = {"qkv": {"w": w_init(kq, (width, 3 * inner), jnp.float32)},
                 "out": {"w": w_init(ko, (inner, width), jnp.float32)}}
        if use_bias:
            theta["qkv"]["b"] = jnp.zeros((3 * inner,), jnp.float32)
            theta["out"]["b"] = jnp.zeros((width,), jnp.float32)
        return theta

    def project(x, theta):
        """The queries, keys and values (batch, T, heads, head_dim) of ``x``."""
        if x.ndim != 3:
            raise ValueError(f"multi_head_attention: expected (batch, T, features), got "
                             f"{tuple(x.shape)}")
        b, t, width = x.shape
        w = theta["qkv"]["w"]
        if w.shape[0] != width:
            raise ValueError(f"multi_head_attention: expected (batch, T, {w.shape[0]}), got "
                             f"{tuple(x.shape)}")
        qkv = x.astype(w.dtype) @ w
        if use_bias:
            qkv = qkv + theta["qkv"]["b"]
        return jnp.split(qkv.reshape(b, t, 3 * num_heads, -1), 3, axis=2)

    def output(o, theta):
        b, t, heads, d = o.shape
        y = o.reshape(b, t, heads * d) @ theta["out"]["w"]
        return y + theta["out"]["b"] if use_bias else y

    def apply_fn(x, theta, *, key=None, train=False, mask=None):
        q, k, v = project(x, theta)
        check_length(x.shape[1])
        if rope:
            q, k = rotary(q), rotary(k)
        drop = rate if train else 0.0
        if drop > 0:
            require_key("multi_head_attention", key)
        return output(attend(q, k, v, causal=causal, dropout_rate=drop, key=key, mask=mask),
                      theta)

    def init_cache(theta, batch: int, length: int):
        check_length(length)
        w = theta["qkv"]["w"]
        zeros = jnp.zeros((batch, length, num_heads, w.shape[1] // (3 * num_heads)), w.dtype)
        return {"k": zeros, "v": zeros}

    def step(x, theta, cache, position):
        """One position of a causal decoding: its key and value join the cache, and its
        query attends to every cached position up to it."""
        q, k, v = project(x, theta)
        length = cache["k"].shape[1]
        if rope:
            cos, sin = (jax.lax.dynamic_slice_in_dim(jnp.asarray(table, q.dtype), position, 1)
                        for table in _rotary_tables(length, q.shape[-1]))
            q, k = _rotate(q, cos, sin), _rotate(k, cos, sin)
        cache = {name: jax.lax.dynamic_update_slice_in_dim(cache[name], new.astype(
                     cache[name].dtype), position, axis=1) for name, new in (("k", k), ("v", v))}
        seen = jnp.broadcast_to(jnp.arange(length) <= position, (x.shape[0], length))
        o = explicit_attention(q, cache["k"], cache["v"], causal=False, mask=seen)
        return output(o, theta), cache

    config = {"num_heads": num_heads, "key_dim": key_dim, "causal": causal, "dropout": rate,
              "use_bias": bool(use_bias), "rope": bool(rope), "max_length": max_length,
              "init": name_or_none(init)}
    return Network(init_fn, apply_fn, "multi_head_attention", config, stochastic=rate > 0,
                   masking="use", decoder=Decoder(init_cache, step) if causal else None)


register_layer("multi_head_attention", multi_head_attention)
