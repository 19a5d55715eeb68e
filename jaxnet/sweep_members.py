"""The members of a sweep: :class:`Member` (a network, or the MLP shorthand, and how to train
it) and :class:`MemberResult` (what training it produced); :func:`jaxnet.sweep.fit_many`
trains them."""

from __future__ import annotations

from dataclasses import dataclass, field

import jax.numpy as jnp
import optax

from jaxnet import _checks, activations, layers
from jaxnet import init as initializers
from jaxnet._typing import Network

DEFAULT_HIDDEN = (64, 64)
#: The training hyperparameters a sweep keeps per member in its optimizer state
#: (``optax.inject_hyperparams``), so that members differing in them share one program.
HYPERPARAMETERS = ("learning_rate", "weight_decay", "warmup_steps")


@dataclass(frozen=True)
class Member:
    """One model of a sweep: a network (or the MLP shorthand) and how to train it.

    Attributes:
        hidden: the MLP shorthand's hidden layer widths, e.g. ``(64, 64)`` (the default when
            no ``network`` is given); the output layer is added.
        activation: the shorthand's hidden activation name.
        init: the shorthand's weight initialiser name, or None for the default of the
            activation.
        seed: seeds initialisation exactly as ``fit(seed=...)`` does.
        learning_rate: > 0.
        weight_decay: decoupled weight decay added to the update (``optax.add_decayed_weights``).
        warmup_steps: the learning rate rises linearly from ``learning_rate / warmup_steps``
            at the first step to ``learning_rate`` at step ``warmup_steps`` and stays there
            (:func:`warmup_factor`); 0: no warm-up.
        network: any :class:`~jaxnet.Network` (convolutional, normalized, with dropout, ...)
            instead of the shorthand; it must output one logit per class.
    """

    hidden: tuple[int, ...] | None = None
    activation: str = "relu"
    init: str | None = None
    seed: int = 0
    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    warmup_steps: int = 0
    network: Network | None = None

    def __post_init__(self):
        if self.network is not None:
            if not isinstance(self.network, Network):
                raise TypeError(f"network: expected a jaxnet Network, got "
                                f"{type(self.network).__name__}")
            if self.hidden is not None or self.init is not None:
                raise ValueError("network: give either network= or the MLP shorthand "
                                 "(hidden=, init=), not both")
        else:
            object.__setattr__(self, "hidden", tuple(self.hidden if self.hidden is not None
                                                     else DEFAULT_HIDDEN))
            for width in self.hidden:
                _checks.positive_int("hidden", width)
            object.__setattr__(self, "activation", activations.canonical(self.activation))
            if self.activation == "softmax":
                raise ValueError("activation: softmax is for outputs, not hidden layers")
            if self.init is not None:
                object.__setattr__(self, "init", initializers.canonical(self.init))
        object.__setattr__(self, "seed", _checks.seed("seed", self.seed))
        _checks.positive_float("learning_rate", self.learning_rate)
        if not self.weight_decay >= 0:
            raise ValueError(f"weight_decay: expected a number >= 0, got {self.weight_decay!r}")
        _checks.positive_int("warmup_steps", self.warmup_steps, allow_zero=True)

    @property
    def is_mlp(self) -> bool:
        """Given by the MLP shorthand (the fast path applies)."""
        return self.network is None

    @property
    def init_name(self) -> str | None:
        """The shorthand's initialiser (the activation's default if not given)."""
        return (self.init or initializers.default_for(self.activation)) if self.is_mlp else None

    def build(self, num_outputs: int, *, flatten_input=True, input_scale=1 / 255) -> Network:
        """This member's network on its own (what ``jaxnet.fit`` would train): ``network``,
        or the shorthand's MLP with ``num_outputs`` outputs and the given input layers."""
        if not self.is_mlp:
            return self.network
        return layers.mlp([*self.hidden, num_outputs], self.activation, init=self.init_name,
                          flatten_input=flatten_input, input_scale=input_scale)


def warmup_factor(step, warmup_steps):
    """The linear warm-up's multiplier of the learning rate at ``step`` (0 first):
    ``min(1, (step + 1) / warmup_steps)``; 1 throughout for ``warmup_steps=0``. Traceable,
    so that members of one program may warm up over different numbers of steps.

    Examples:
        >>> [float(warmup_factor(s, 4)) for s in (0, 1, 3, 10)], float(warmup_factor(0, 0))
        ([0.25, 0.5, 1.0, 1.0], 1.0)
    """
    return jnp.minimum(1.0, (step + 1) / jnp.maximum(warmup_steps, 1))


def optimizer_factory(base, *, decay: bool = True, warmup: bool = True):
    """``make(learning_rate, weight_decay, warmup_steps)`` -> the optax optimizer a member
    trains with: decoupled weight decay added to the gradient (if ``decay``), then ``base``
    (an entry of :data:`jaxnet.train.OPTIMIZERS`) at ``learning_rate``, its update scaled by
    :func:`warmup_factor` (if ``warmup``). ``decay=False``/``warmup=False`` leave the term out
    (one read of theta, one multiply per leaf less) when no member needs it; the sweep wraps
    the factory in ``optax.inject_hyperparams``."""
    def make(learning_rate, weight_decay=0.0, warmup_steps=0):
        parts = [optax.add_decayed_weights(weight_decay)] if decay else []
        parts.append(base(learning_rate))
        if warmup:
            parts.append(optax.scale_by_schedule(lambda step: warmup_factor(step, warmup_steps)))
        return parts[0] if len(parts) == 1 else optax.chain(*parts)

    return make


@dataclass
class MemberResult:
    """What training one member produced."""

    member: Member
    theta: object
    history: dict[str, list[float]] = field(default_factory=dict)
    stop_reason: str | None = None
    best_epoch: int | None = None
    diagnostics_init: dict = field(default_factory=dict)
    diagnostics_final: dict = field(default_factory=dict)
    diagnostics_epochs: list[dict] = field(default_factory=list)  # after each epoch it trained
    test: dict | None = None
    wall_s: float = 0.0  # training (its share of its group) and test evaluation, in seconds
    compile_s: float = 0.0
    epoch_s: list[float] = field(default_factory=list)  # each epoch's seconds (its share)
    group: int = 0  # members with the same group number trained as one compiled program
