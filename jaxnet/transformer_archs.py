"""Deep transformer language models for the depth study: where the normalization goes and how
the residual is scaled, at any depth (:func:`deep_transformer`).

For a stack of ``N`` blocks on ``x`` (batch, T, width), with ``F`` a block's causal attention
and then its feed-forward network, each in its own residual branch (``LN`` a layer norm):

- ``pre-ln`` (GPT-2; Xiong et al. 2020): ``x <- x + F(LN(x))``, one more ``LN`` after the
  stack. At initialisation the gradient of the last FFN weight shrinks as ``1 / sqrt(N)``;
- ``post-ln`` (Vaswani et al. 2017): ``x <- LN(x + F(x))``. The same gradient is independent
  of ``N``, and large: without a learning-rate warm-up training fails (Xiong et al. 2020);
- ``rezero`` (Bachlechner et al. 2020): ``x <- x + a F(x)`` with one learned scalar ``a`` per
  branch, 0 at initialisation (each block starts as the identity), no normalization;
- ``deepnorm`` (Wang et al. 2022, DeepNet): ``x <- LN(alpha x + F(x))`` with ``alpha =
  (2N)^(1/4)``, and at initialisation the value and output projections and both FFN matrices
  (Glorot-initialised) scaled by ``beta = (8N)^(-1/4)`` (the decoder-only constants);
- ``admin`` (Liu et al. 2020, Admin): ``x <- LN(omega x + F(x))``, post-LN with the shortcut
  scaled by ``omega = sqrt((n + 1) / ln(n + 1) - 1)`` for ``n = 2N`` residual branches, the
  closed form of its authors' ``admin_torch`` for an output change of O(log n)
  (:func:`admin_omega`), in place of the profiled ``omega_i = sqrt(sum_{j<i} Var f_j)``;
- ``pure-attention`` (Dong et al. 2021): ``x <- Attn(x)``: no skip, no FFN, no normalization,
  whose token representations collapse toward one vector (rank one) doubly exponentially
  with depth; ``attention-skip``: ``x <- x + Attn(x)``, the skip that prevents it.

Every model is :func:`jaxnet.models.language_model` around its blocks, ``serial(embedding,
positional_embedding, *blocks, [LN], dense)``: the blocks
are the top-level layers :func:`block_indices` names, which
:func:`jaxnet.diagnostics.block_grad_norms` and :func:`jaxnet.diagnostics.token_cosine` take.
"""

from __future__ import annotations

import math

import jax.numpy as jnp

from jaxnet import _checks
from jaxnet._typing import Network
from jaxnet.attention import multi_head_attention
from jaxnet.combinators import residual
from jaxnet.models import language_model
from jaxnet.transformer import transformer_block

TRANSFORMER_ARCHS = ("pre-ln", "post-ln", "rezero", "deepnorm", "admin", "pure-attention",
                     "attention-skip")
"""The architectures :func:`deep_transformer` builds (the module docstring has each one's
formula)."""
#: Top-level layers before the first block: the embedding and the learned positions.
FIRST_BLOCK = 2


def deepnorm_constants(depth: int) -> tuple[float, float]:
    """``(alpha, beta)`` of DeepNorm for a decoder-only stack of ``depth`` blocks (Wang et al.
    2022): ``alpha = (2N)^(1/4)`` on the shortcut, ``beta = (8N)^(-1/4)`` on the initial
    value, output and FFN weights.

    Examples:
        >>> [round(c, 4) for c in deepnorm_constants(8)]
        [2.0, 0.3536]
    """
    depth = _checks.positive_int("depth", depth)
    return (2 * depth) ** 0.25, (8 * depth) ** -0.25


def admin_omega(depth: int) -> float:
    """Admin's shortcut scale for a stack of ``depth`` blocks, ``n = 2 depth`` residual
    branches (attention and FFN): ``sqrt((n + 1) / ln(n + 1) - 1)`` (Liu et al. 2020; the
    default, O(log n) output change, of ``admin_torch.calculate_init``).

    Examples:
        >>> round(admin_omega(6), 4)  # n = 12: sqrt(13 / ln 13 - 1)
        2.017
    """
    n = 2 * _checks.positive_int("depth", depth)
    return ((n + 1) / math.log(n + 1) - 1) ** 0.5


def block_indices(depth: int) -> range:
    """The top-level positions of a :func:`deep_transformer`'s blocks."""
    return range(FIRST_BLOCK, FIRST_BLOCK + depth)


def deep_transformer(arch: str, depth: int, vocab_size: int, *, width: int = 128,
                     num_heads: int = 4, context: int = 128, activation: str = "gelu",
                     dropout: float = 0.0) -> Network:
    """A causal transformer language model of ``depth`` blocks in one of
    :data:`TRANSFORMER_ARCHS` (the module docstring has each one's formula): token ids
    (batch, T <= context) -> next-token logits (batch, T, vocab_size). The FFN is ``4 *
    width`` wide, two thirds of that for a gated ``activation`` (``swiglu``, ``geglu``: the
    same parameter count, Shazeer 2020).

    Examples:
        >>> import jax
        >>> net = deep_transformer("deepnorm", 4, 81, width=32, num_heads=2, context=16)
        >>> net.apply(jax.numpy.zeros((1, 16), jax.numpy.int32),
        ...           net.init(jax.random.key(0), (16,))).shape
        (1, 16, 81)
    """
    _checks.one_of("arch", arch, TRANSFORMER_ARCHS)
    depth = _checks.positive_int("depth", depth)
    width = _checks.positive_int("width", width)
    context = _checks.positive_int("context", context)
    common = dict(width=width, activation=activation, dropout=dropout, causal=True,
                  attention_bias=False)
    if arch in ("pre-ln", "post-ln"):
        blocks = [transformer_block(num_heads, norm=arch[:-3], **common) for _ in range(depth)]
    elif arch == "rezero":
        blocks = [transformer_block(num_heads, norm="none", residual_scale="rezero", **common)
                  for _ in range(depth)]
    elif arch == "deepnorm":
        alpha, _ = deepnorm_constants(depth)
        blocks = [transformer_block(num_heads, norm="post", shortcut_scale=alpha,
                                    init="glorot_uniform", **common) for _ in range(depth)]
    elif arch == "admin":
        blocks = [transformer_block(num_heads, norm="post", shortcut_scale=admin_omega(depth),
                                    **common) for _ in range(depth)]
    else:
        def attention():
            return multi_head_attention(num_heads, causal=True, dropout=dropout,
                                        use_bias=False)
        blocks = [attention() if arch == "pure-attention" else residual(attention())
                  for _ in range(depth)]
    # dropout acts inside the blocks only, so the blocks stay at block_indices(depth)
    net = language_model(blocks, vocab_size, width=width, context=context,
                         final_norm=arch == "pre-ln")
    if arch != "deepnorm":
        return net
    _, beta = deepnorm_constants(depth)

    def init_fn(key, input_shape):
        theta = net.init(key, input_shape)
        for b in block_indices(depth):
            theta[b] = _scale_deepnorm_block(theta[b], beta)
        return theta

    return net._replace(init=init_fn)


def _scale_deepnorm_block(theta: list, beta: float) -> list:
    """A post-LN block's theta ``[attention branch, LN, FFN branch, LN]`` with the value and
    output projections and the FFN matrices multiplied by ``beta`` (queries and keys kept)."""
    attention_branch, norm1, ffn_branch, norm2 = theta
    return [_scaled(attention_branch, beta), norm1, _scaled(ffn_branch, beta), norm2]


def _scaled(theta, beta: float):
    """Every weight matrix in ``theta`` times ``beta``; an attention's (a dict with ``qkv``
    and ``out``) only in its values' columns and its output projection."""
    if isinstance(theta, list | tuple):
        return [_scaled(t, beta) for t in theta]
    if not isinstance(theta, dict):
        return theta
    if "qkv" in theta:
        qkv = theta["qkv"]["w"]
        inner = qkv.shape[1] // 3
        column = jnp.concatenate([jnp.ones((2 * inner,), qkv.dtype),
                                  jnp.full((inner,), beta, qkv.dtype)])
        return {**theta, "qkv": {**theta["qkv"], "w": qkv * column},
                "out": {**theta["out"], "w": theta["out"]["w"] * beta}}
    if "w" in theta:
        return {**theta, "w": theta["w"] * beta}
    return {k: _scaled(v, beta) for k, v in theta.items()}
