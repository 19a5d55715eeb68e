"""Sampling text from a causal language model: ``generate``, the decoding loop compiled as one
``lax.scan``.

Two ways to compute each new token's logits, the same numbers either way:

- **with a key-value cache**, when every layer of the network can decode one position at a
  time (``Network.decoder``: the transformer language model's layers can): each step runs
  the network on one position, its attention reading the keys and values of the earlier
  positions from a cache, until the text fills ``context``;
- **by recomputing a window**, otherwise (a bidirectional layer, batch normalization) and
  once the text is longer than ``context`` (the window then slides, and every position's
  keys change with it): each step runs the network on a window of fixed length holding the
  known tokens followed by placeholders. In a causal network (each position sees only
  itself and earlier ones) the placeholders cannot change the logits of a known position.

``generate`` checks that the network is causal before it samples (a non-causal network would
let the placeholders change every sample, silently).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxnet import _checks, _inputs
from jaxnet._typing import Decoder, Network

__all__ = ["generate"]


@functools.lru_cache(maxsize=16)
def _sampler(apply, decoder: Decoder | None, prompt_length: int, steps: int, context: int,
             greedy: bool):
    """The compiled loop for one network, lengths and mode: ``(theta, tokens, key,
    temperature) -> tokens`` with the first ``prompt_length`` of ``tokens`` (batch,
    prompt_length + steps) known and the rest filled; with a ``decoder``, the first
    ``context`` positions through its cache."""

    def sample(theta, tokens, key, temperature):
        def pick(logits, known):
            """The token at position ``known``, from the logits of the one before it."""
            if greedy:
                return jnp.argmax(logits, axis=-1).astype(tokens.dtype)
            sample_key = jax.random.fold_in(key, known - prompt_length)
            return jax.random.categorical(sample_key, logits.astype(jnp.float32) /
                                          temperature).astype(tokens.dtype)

        known = prompt_length
        if decoder is not None:  # the first `context` positions, one at a time, cached
            tokens = _decode(decoder, theta, tokens, pick, prompt_length, context)
            known = context
        if known < prompt_length + steps:  # the rest, recomputing a sliding window
            tokens = _recompute(apply, theta, tokens, pick, known,
                                prompt_length + steps - known, context)
        return tokens

    return jax.jit(sample)


def _decode(decoder: Decoder, theta, tokens, pick, prompt_length: int, length: int):
    """Fill ``tokens[:, prompt_length:length]``, feeding position ``p`` to the network's
    decoder at step ``p`` (the prompt's tokens are fed, not replaced)."""
    cache = decoder.init_cache(theta, tokens.shape[0], length)

    def step(carry, position):
        tokens, cache = carry
        current = jax.lax.dynamic_slice_in_dim(tokens, position, 1, axis=1)
        logits, cache = decoder.step(current, theta, cache, position)
        chosen = pick(logits[:, 0], position + 1)
        keep = jax.lax.dynamic_index_in_dim(tokens, position + 1, axis=1, keepdims=False)
        tokens = jax.lax.dynamic_update_index_in_dim(
            tokens, jnp.where(position + 1 >= prompt_length, chosen, keep), position + 1, axis=1)
        return (tokens, cache), None

    (tokens, _), _ = jax.lax.scan(step, (tokens, cache), jnp.arange(length - 1))
    return tokens


def _recompute(apply, theta, tokens, pick, start: int, steps: int, context: int):
    """Fill ``tokens[:, start:start + steps]``, each from the network run on the window of
    the ``context`` tokens before it."""

    def step(tokens, known):
        begin = jnp.maximum(known - context, 0)                # the window's first token
        window = jax.lax.dynamic_slice_in_dim(tokens, begin, context, axis=1)
        logits = jax.lax.dynamic_index_in_dim(apply(window, theta), known - 1 - begin, axis=1,
                                              keepdims=False)
        return jax.lax.dynamic_update_index_in_dim(tokens, pick(logits, known), known,
                                                   axis=1), None

    tokens, _ = jax.lax.scan(step, tokens, start + jnp.arange(steps))
    return tokens


@functools.lru_cache(maxsize=16)
def _forward(apply):
    return jax.jit(apply)


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
    # one compiled pass over both windows: op-by-op dispatch of a 4-block model's first
    # pass took 1.3 s, the compiled one 0.3 s
    ya, yb = np.asarray(_forward(network.apply)(jnp.asarray(np.concatenate([a, b])),
                                                theta))[:, :p]
    if not np.allclose(ya, yb, rtol=1e-5, atol=1e-5):
        raise ValueError("generate: the network is not causal (its outputs at a position "
                         "change with later tokens): every layer must see only earlier "
                         "positions: attention with causal=True, conv1d with padding='causal', "
                         "no bidirectional layer")


def generate(network: Network, theta, prompt, steps: int, *, key=None,
             temperature: float = 1.0, context: int | None = None, cache: bool = True):
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
        cache: compute the first ``context`` positions with a key-value cache when every
            layer can decode one position at a time (``Network.decoder``; the transformer
            language model's layers can): each new token then costs one position instead of
            a whole window (see BENCHMARKS.md, "Sequences"). False recomputes the window for
            every token. The tokens are the same either way (up to float rounding).

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
    if not isinstance(cache, bool):
        raise TypeError(f"cache: expected True or False, got {cache!r}")
    decoder = network.decoder if cache and prompt.shape[1] < context else None
    sample = _sampler(network.apply, decoder, prompt.shape[1], steps, context, temperature == 0)
    out = sample(theta, jnp.asarray(tokens), key if key is not None else jax.random.key(0),
                 jnp.float32(max(temperature, 1e-6)))
    return out[0] if single else out
