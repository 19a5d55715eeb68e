"""Pickle-free checkpoints of the whole training state, written atomically.

A checkpoint is one self-describing file::

    JAXNETCKPT 1\\n
    <sha256 of the payload, 64 hex digits>\\n
    <payload: msgpack (flax.serialization) of {"header": JSON text, "theta": ..., ...}>

msgpack holds only plain data (maps, lists, numbers, strings, raw array bytes with their dtype
and shape); restoring never constructs arbitrary objects, so a file can never run code. The
checksum is verified before anything is decoded, then every tree is checked against the
structure, shapes and dtypes the caller expects.

Writes go to a temporary file in the same directory, are fsynced, then renamed over the final
name, so a crash leaves either the old file or the new one, never half of one.
"""

from __future__ import annotations

import json
import os
import re
import warnings
from pathlib import Path

import jax
import numpy as np
from flax import serialization

from jaxnet._io import atomic_write, checksummed, verified_payload
from jaxnet._typing import State

# A layer's State is stored as the plain map of its arrays (and rebuilt into a State from the
# template when restoring), so files hold nothing but maps, lists and arrays.
serialization.register_serialization_state(
    State,
    lambda s: {k: serialization.to_state_dict(v) for k, v in s.values.items()},
    lambda target, d: State({k: serialization.from_state_dict(v, d[k])
                             for k, v in target.values.items()}),
    override=True)

MAGIC = b"JAXNETCKPT 1\n"
_NAME = re.compile(r"^epoch-(\d{6})(?:-step-(\d{9}))?\.ckpt$")


class CheckpointError(ValueError):
    """A checkpoint is unreadable, corrupt, or does not match what the caller expects."""


def save(path: str | os.PathLike, trees: dict, header: dict | None = None) -> Path:
    """Write ``trees`` (name -> pytree of arrays) and a JSON-serialisable ``header`` atomically.

    Examples:
        >>> import jax.numpy as jnp, tempfile, os
        >>> p = os.path.join(tempfile.mkdtemp(), "theta.ckpt")
        >>> _ = save(p, {"theta": [{"w": jnp.ones((2, 2))}]}, {"note": "hi"})
        >>> load(p)[0]["note"]
        'hi'
    """
    path = Path(path)
    state = {name: serialization.to_state_dict(jax.device_get(tree))
             for name, tree in trees.items()}
    state["header"] = json.dumps(header or {}, sort_keys=True)
    payload = serialization.msgpack_serialize(state)
    return atomic_write(path, checksummed(MAGIC, payload))


def load(path: str | os.PathLike) -> tuple[dict, dict]:
    """Read a checkpoint: ``(header, trees)`` with numpy leaves, after verifying its checksum.

    Raises:
        CheckpointError: naming the file, if it is not a jaxnet checkpoint, is truncated or
            corrupt (checksum mismatch), or cannot be decoded.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise CheckpointError(f"{path}: cannot read checkpoint ({err.strerror})") from None
    if not raw.startswith(MAGIC):
        raise CheckpointError(f"{path}: not a jaxnet checkpoint (bad magic bytes)")
    payload = verified_payload(raw, MAGIC)
    if payload is None:
        raise CheckpointError(f"{path}: checksum mismatch (the file is truncated or corrupt)")
    try:
        state = serialization.msgpack_restore(payload)
        header = json.loads(state.pop("header"))
    except Exception as err:  # noqa: BLE001 - any decoding failure means a bad file
        raise CheckpointError(f"{path}: cannot decode checkpoint ({type(err).__name__})") from None
    return header, state


def restore(path: str | os.PathLike, like: dict) -> tuple[dict, dict]:
    """Load a checkpoint and rebuild each tree in ``like`` (name -> template pytree).

    The restored trees have the templates' structure (NamedTuples, lists, dicts); every leaf
    must have the template's shape and dtype.

    Raises:
        CheckpointError: naming the file and the first tree or leaf that does not match.
    """
    header, state = load(path)
    return header, rebuild(path, state, like)


def rebuild(path, state: dict, like: dict) -> dict:
    """The trees of a :func:`load`-ed ``state`` rebuilt on the templates of ``like`` (name ->
    pytree whose leaves have a shape and dtype: arrays or ``jax.ShapeDtypeStruct``); ``path``
    names the file in errors. Raises CheckpointError at the first mismatch."""
    out = {}
    for name, template in like.items():
        if name not in state:
            raise CheckpointError(f"{path}: has no {name!r} (it holds {sorted(state)})")
        try:
            tree = serialization.from_state_dict(template, state[name])
        except Exception as err:  # noqa: BLE001 - flax raises several kinds for a mismatch
            raise CheckpointError(f"{path}: {name} does not match the expected structure "
                                  f"({str(err).splitlines()[0][:200]})") from None
        for (p, want), got in zip(jax.tree.leaves_with_path(template),
                                  jax.tree.leaves(tree), strict=True):
            want_shape, got_shape = tuple(np.shape(want)), tuple(np.shape(got))
            want_dtype, got_dtype = _dtype(want), _dtype(got)
            if want_shape != got_shape or want_dtype != got_dtype:
                raise CheckpointError(
                    f"{path}: {name}{jax.tree_util.keystr(p)} is {got_dtype}{list(got_shape)}, "
                    f"expected {want_dtype}{list(want_shape)}")
        out[name] = tree
    return out


def _dtype(x) -> str:
    return str(np.asarray(x).dtype) if not hasattr(x, "dtype") else str(x.dtype)


class CheckpointManager:
    """Checkpoints ``epoch-000012.ckpt`` in one directory, keeping the newest ``keep``.

    Args:
        directory: where checkpoints live (created if missing); it holds nothing else.
        keep: how many of the newest checkpoints to keep (older ones are deleted).
    """

    def __init__(self, directory: str | os.PathLike, keep: int = 3):
        from jaxnet import _checks

        self.directory = Path(directory)
        self.keep = _checks.positive_int("keep", keep)
        if self.directory.exists() and not self.directory.is_dir():
            raise ValueError(f"checkpoint_dir: {str(directory)!r} is not a directory")

    def path(self, epoch: int, step: int = 0) -> Path:
        """``epoch-000012.ckpt`` after 12 epochs; ``epoch-000012-step-000000300.ckpt`` 300
        steps into the 13th (a streamed epoch saves mid-way)."""
        middle = f"-step-{step:09d}" if step else ""
        return self.directory / f"epoch-{epoch:06d}{middle}.ckpt"

    def positions(self) -> list[tuple[int, int]]:
        """``(epochs done, steps into the next)`` of every checkpoint file, oldest first."""
        if not self.directory.is_dir():
            return []
        return sorted((int(m.group(1)), int(m.group(2) or 0)) for p in self.directory.iterdir()
                      if (m := _NAME.match(p.name)))

    def epochs(self) -> list[int]:
        """Epochs with an end-of-epoch checkpoint file, oldest first."""
        return [epoch for epoch, step in self.positions() if step == 0]

    def save(self, epoch: int, trees: dict, header: dict, step: int = 0) -> Path:
        """Write ``epoch-NNNNNN.ckpt`` (or, ``step`` steps into the next epoch, its
        ``-step-`` form), drop checkpoints beyond ``keep``, and remove temporary files a killed
        writer left behind (only the writing process calls this)."""
        if self.directory.is_dir():
            for stale in self.directory.glob(".epoch-*.ckpt.tmp-*"):
                stale.unlink(missing_ok=True)
        path = save(self.path(epoch, step), trees, {**header, "epoch": epoch,
                                                    "step_in_epoch": step})
        for old in self.positions()[:-self.keep]:
            self.path(*old).unlink(missing_ok=True)
        return path

    def restore_latest(self, like) -> tuple[dict, dict] | None:
        """The newest checkpoint that restores cleanly, or None if there is none. ``like``:
        the templates (see :func:`rebuild`), or a function of the file's header giving them.

        A corrupt or truncated newer file is skipped with a warning naming it; a checkpoint
        that decodes but does not match ``like`` raises CheckpointError (a different run).
        """
        for position in reversed(self.positions()):
            path = self.path(*position)
            try:
                header, state = load(path)
            except CheckpointError as err:
                warnings.warn(f"skipping unreadable checkpoint: {err}", RuntimeWarning,
                              stacklevel=2)
                continue
            return header, rebuild(path, state, like(header) if callable(like) else like)
        return None
