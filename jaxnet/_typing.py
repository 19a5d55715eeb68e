"""Type aliases, the `Network` pair shared by every module, and `State`, the marker of a
layer's non-trainable state inside theta."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax

Params = Any  # a pytree of arrays: theta
PRNGKey = jax.Array
Shape = tuple[int, ...]
Array = jax.Array


@jax.tree_util.register_pytree_with_keys_class
class State:
    """Non-trainable state of a layer (batch normalization's running mean and variance), kept
    inside theta beside the trainable parameters.

    theta stays one object that a user passes around (``fit`` returns it, ``evaluate``,
    ``predict``, checkpoints and ``params_sha256`` take it as it is), while the kind of each
    leaf is in its type rather than in its name: the gradient, the optimizer, weight decay and
    ``l2`` see only what is *not* under a ``State`` (:func:`jaxnet._state.split`), and a
    training step writes back what the layer returned under it. ``State`` is a pytree node
    holding a dict of arrays; ``jax.tree`` functions see through it (``theta[2]["stats"]
    ["mean"]``).

    Examples:
        >>> import jax.numpy as jnp
        >>> s = State({"mean": jnp.zeros(3)})
        >>> s["mean"].shape
        (3,)
    """

    __slots__ = ("values",)

    def __init__(self, values: dict):
        if not isinstance(values, dict):
            raise TypeError(f"State: expected a dict of arrays, got {type(values).__name__}")
        self.values = values

    def __getitem__(self, key):
        return self.values[key]

    def keys(self):
        return self.values.keys()

    def items(self):
        return self.values.items()

    def __iter__(self):
        return iter(self.values)

    def __len__(self) -> int:
        return len(self.values)

    def __contains__(self, key) -> bool:
        return key in self.values

    def __repr__(self) -> str:
        return f"State({self.values!r})"

    def tree_flatten_with_keys(self):
        keys = sorted(self.values)
        return [(jax.tree_util.DictKey(k), self.values[k]) for k in keys], tuple(keys)

    def tree_flatten(self):
        keys = sorted(self.values)
        return [self.values[k] for k in keys], tuple(keys)

    @classmethod
    def tree_unflatten(cls, keys, children):
        return cls(dict(zip(keys, children, strict=True)))


class Decoder(NamedTuple):
    """How a causal layer runs one position at a time (:mod:`jaxnet._decoding`):
    ``init_cache(theta, batch, length) -> cache`` for sequences up to ``length`` positions,
    and ``step(x, theta, cache, position) -> (y, cache)`` with ``x`` the input at
    ``position`` (batch, 1, ...), every earlier position having been stepped through."""

    init_cache: Callable[..., Any]
    step: Callable[..., Any]


class Network(NamedTuple):
    """A network as two pure functions, in the seed's notation f[x, theta].

    Attributes:
        init: ``init(key, input_shape) -> theta``. ``input_shape`` is the shape of one
            example (no batch axis), as in Keras's ``input_shape``.
        apply: ``apply(x, theta, *, key=None, train=False) -> y`` for ``x`` with a leading
            batch axis. ``key`` and ``train`` matter only to stochastic layers (dropout) and
            stateful ones (batch normalization normalises with batch statistics when
            ``train``, with its stored statistics otherwise). Inference is the default.
        name: the layer's kind, e.g. ``"dense"`` (what :func:`jaxnet.layers.from_config`
            looks up; no behaviour depends on it).
        config: JSON-serialisable hyperparameters that rebuild the layer with
            :func:`jaxnet.layers.from_config`.
        children: sub-networks of a composition (empty for a single layer). A composition's
            theta is a list with one entry per child, in order (stax's convention), so
            introspection (:func:`jaxnet.layers.summary`, :mod:`jaxnet.diagnostics`) can
            recurse into it at any depth.
        stochastic: whether ``apply(..., train=True)`` uses its ``key`` (dropout). ``None``
            (a layer that did not say) counts as stochastic, to be safe: training then
            derives a key for every step.
        stateful: whether theta holds :class:`State` that training updates.
        with_state: ``with_state(x, theta, *, key=None, train=False) -> (y, theta)`` for a
            stateful layer or a composition: the forward pass that also returns theta with
            its state updated (in training; unchanged in inference). ``None`` for a
            stateless layer, whose theta never changes in a forward pass.
        output_activation: ``"softmax"`` or ``"sigmoid"`` when the network's outputs are
            probabilities made by that activation as its last step (``dense(10,
            activation="softmax")``, Keras's habit), else None (logits or other values). The
            cross-entropy losses then take the outputs as probabilities, as Keras's
            ``from_logits=False`` does (:func:`jaxnet.losses.make_objective`), and the
            accuracies threshold them at 0.5 (:func:`jaxnet.metrics.for_outputs`).
        scales_input: whether the network brings raw values to a small scale (``rescale``,
            batch or layer normalization; a composition does if one of its layers does).
            ``fit`` warns when integer inputs such as uint8 pixels (0-255) reach a network
            that does not.
        vocab_size: the vocabulary size when the network's input is integer token ids in
            ``[0, vocab_size)`` (it starts with an :func:`jaxnet.embeddings.embedding`), else
            None: shapes are then traced with int32 inputs, and ``fit``, ``evaluate`` and
            ``predict`` check the ids against it.
        scannable: whether a run of alike copies of this layer in a ``serial`` may be applied
            as one ``lax.scan`` over their stacked theta (:mod:`jaxnet._alike`; the default).
            False where the scan costs more than it saves: a transformer block's activations
            are large, and the scan's stacked residuals made a 4-block char-LM's training
            step 175 ms where the unrolled blocks take 130 ms (16 blocks: 700 and 500 ms, the
            unrolled program compiling no slower) on this project's 2-core CPU. Such a run
            is still scanned when it is longer than :data:`jaxnet._alike.MAX_UNROLLED_LAYERS`
            (past it XLA:CPU's unrolled step stops scaling), and each layer rematerialised
            once its residuals exceed :data:`jaxnet._alike.REMAT_RUN_BYTES` (memory then
            stays flat with the depth).
        masking: how the layer treats a padding mask over time (:mod:`jaxnet.masking`):
            ``"keep"`` it acts on each position alone and passes the mask on; ``"use"`` its
            ``apply``/``with_state`` take ``mask=`` (batch, T) and its output keeps the
            positions (attention, recurrent layers returning sequences, a composition);
            ``"end"`` it takes ``mask=`` and its output has no time axis (pooling over time,
            a recurrent layer's last state). None: it cannot honour a mask, and a mask that
            reaches it is an error, never dropped silently.
        make_mask: for a layer that starts a mask (``embedding(mask_zero=True)``), its
            input ids -> the mask (batch, T), True at valid positions; a composition has its
            first layer's.
        decoder: a :class:`Decoder` when the layer can run causally one position at a time
            with a cache (what :func:`jaxnet.generate` uses); None otherwise.
    """

    init: Callable[..., Params]
    apply: Callable[..., Array]
    name: str
    config: dict
    children: tuple = ()
    stochastic: bool | None = None
    stateful: bool = False
    with_state: Callable | None = None
    output_activation: str | None = None
    scales_input: bool = False
    vocab_size: int | None = None
    scannable: bool = True
    masking: str | None = None
    make_mask: Callable | None = None
    decoder: Decoder | None = None

    def run(self, x, theta, *, key=None, train=False, mask=None):
        """``(y, theta')``: the forward pass and theta with its state as the pass left it.

        For a stateless network ``theta'`` is ``theta``; for a stateful one in training it
        holds the updated state (what ``fit`` keeps after every step). ``mask`` (batch, T)
        marks the valid positions of a padded batch: a layer that uses masks receives it; a
        position-wise one ignores it; any other refuses it (``masking``)."""
        kwargs = {"key": key, "train": train}
        if mask is not None:
            if self.masking is None:
                raise ValueError(
                    f"{self.name}: cannot honour the padding mask of embedding(mask_zero=True): "
                    f"it would mix padded positions into valid ones. Use layers that take masks "
                    f"(attention, lstm, gru, conv1d with 'causal' or 'same' padding, the "
                    f"global pools) or pad no positions")
            if self.masking != "keep":
                kwargs["mask"] = mask
        if self.with_state is None:
            return self.apply(x, theta, **kwargs), theta
        return self.with_state(x, theta, **kwargs)

    @property
    def is_stochastic(self) -> bool:
        """``stochastic``, with an undeclared (None) layer counted as stochastic."""
        return self.stochastic is not False
