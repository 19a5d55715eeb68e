"""Sampling text from a causal language model: ``generate``, the decoding loop compiled as one
``lax.scan``.

Every step runs the network on a window of fixed length and samples the token after the last
known one, so the loop is one program with no retracing. The window holds the known tokens
followed by placeholders; in a causal network (each position sees only itself and earlier
ones) the placeholders cannot change the logits of a known position. ``generate`` checks that
the network is causal before it samples (a non-causal network would let the placeholders
change every sample, silently).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxnet import _checks, _inputs
from jaxnet._typing import Network

__all__ = ["generate"]


@functools.lru_cache(maxsize=16)
def _sampler(apply, steps: int, context: int, greedy: bool):
    """The compiled loop for one network, length and mode: ``(theta, tokens, start, key,
    temperature) -> tokens`` with the first ``start`` of ``tokens`` (batch, start + steps)
    known and the rest filled."""
    return jax.jit(functools.partial(_sample, apply, steps=steps, context=context,
                                     greedy=greedy))


def _sample(apply, theta, tokens, start, key, temperature, *, steps: int, context: int,
            greedy: bool):
    def step(tokens, i):
        known = start + i                                      # tokens known so far
        begin = jnp.maximum(known - context, 0)                # the window's first token
        window = jax.lax.dynamic_slice_in_dim(tokens, begin, context, axis=1)
        logits = jax.lax.dynamic_index_in_dim(apply(window, theta), known - 1 - begin, axis=1,
                                              keepdims=False)
        if greedy:
            nxt = jnp.argmax(logits, axis=-1)
        else:
            nxt = jax.random.categorical(jax.random.fold_in(key, i),
                                         logits.astype(jnp.float32) / temperature)
        tokens = jax.lax.dynamic_update_index_in_dim(tokens, nxt.astype(tokens.dtype), known,
                                                     axis=1)
        return tokens, None

    tokens, _ = jax.lax.scan(step, tokens, jnp.arange(steps))
    return tokens


def _check_causal(network: Network, theta, prompt, context: int) -> None:
    """Refuse a network whose outputs at the prompt's positions depend on later tokens."""
    p = min(prompt.shape[1], context)
    if p == context:  # the window is all prompt: compare the first half with the rest
        p = max(context // 2, 1)
    vocab = network.vocab_size or 2
    fill = np.arange(context - p) % vocab
    base = np.asarray(prompt[:1, -p:])
    a = np.concatenate([base, fill[None]], axis=1).astype(np.int32)
    b = np.concatenate([base, (fill[None] + 1) % vocab], axis=1).astype(np.int32)
    ya, yb = (np.asarray(network.apply(jnp.asarray(w), theta))[:, :p] for w in (a, b))
    if not np.allclose(ya, yb, rtol=1e-5, atol=1e-5):
        raise ValueError("generate: the network is not causal (its outputs at a position "
                         "change with later tokens): every layer must see only earlier "
                         "positions: attention with causal=True, conv1d with padding='causal', "
                         "no bidirectional layer")


def generate(network: Network, theta, prompt, steps: int, *, key=None,
             temperature: float = 1.0, context: int | None = None):
    """Continue ``prompt`` by ``steps`` tokens sampled from a causal language model.

    Args:
        network: a causal network of token ids, (batch, T) -> logits (batch, T, vocab), e.g.
            :func:`jaxnet.models.transformer_lm`.
        theta: its parameters.
        prompt: the token ids to continue, (P,) or a batch (batch, P), at least one each.
        steps: how many tokens to add.
        key: the PRNG key of the sampling (needed unless ``temperature`` is 0).
        temperature: the logits are divided by it before sampling: below 1 sharper, above 1
            flatter; 0 takes the most likely token every step (greedy, deterministic).
        context: the longest window the network takes (its positions table, e.g. the
            ``context`` of :func:`~jaxnet.models.transformer_lm`): each step then sees the
            last ``context`` tokens. Default: ``P + steps`` (the whole text in one window).

    Returns:
        The prompt followed by the new tokens: (P + steps,), or (batch, P + steps) for a batch.
        The same ``key`` gives the same text.

    Raises:
        ValueError: for a non-causal network, ids outside the vocabulary, or an empty
            prompt; TypeError for float ids.
    """
    steps = _checks.positive_int("steps", steps)
    temperature = _checks.positive_float("temperature", temperature, allow_zero=True)
    if temperature > 0 and key is None:
        raise ValueError("key: sampling at temperature > 0 needs a PRNG key "
                         "(key=jax.random.key(0)); temperature=0 is greedy and needs none")
    prompt = np.asarray(prompt)
    single = prompt.ndim == 1
    prompt = prompt[None] if single else prompt
    if prompt.ndim != 2 or prompt.shape[1] == 0:
        raise ValueError(f"prompt: expected token ids (P,) or (batch, P) with P >= 1, got "
                         f"shape {prompt.shape}")
    _inputs.check_tokens(network, prompt, "prompt")
    if network.vocab_size is None and not np.issubdtype(prompt.dtype, np.integer):
        raise TypeError(f"prompt: expected integer token ids, got {prompt.dtype}")
    total = prompt.shape[1] + steps
    context = total if context is None else _checks.positive_int("context", context)
    context = min(context, total)
    _check_causal(network, theta, prompt, context)
    tokens = np.zeros((prompt.shape[0], total), np.int32)
    tokens[:, :prompt.shape[1]] = prompt
    sample = _sampler(network.apply, steps, context, temperature == 0)
    out = sample(theta, jnp.asarray(tokens), prompt.shape[1],
                 key if key is not None else jax.random.key(0),
                 jnp.float32(max(temperature, 1e-6)))
    return out[0] if single else out
