"""What the ``jaxnet`` command's subcommands share: one-line usage errors and the checks of
option values that raise them, and the test result lines."""

from __future__ import annotations

import os


class UsageError(ValueError):
    """A bad option value found after parsing; printed as one line, exit code 2."""


def option(name: str, ok: bool, expected: str, value) -> None:
    """Raise :class:`UsageError` naming option ``name`` unless ``ok``."""
    if not ok:
        raise UsageError(f"argument {name}: expected {expected}, got {value!r}")


def wrap(option: str, fn, *args):
    """``fn(*args)``, its ValueError or TypeError reported as a usage error of ``option``."""
    try:
        return fn(*args)
    except (ValueError, TypeError) as err:
        raise UsageError(f"argument {option}: {str(err).split(': ', 1)[-1]}") from None


def check_data_dir(args) -> None:
    """``--data-dir``, when given, must be a directory."""
    if args.data_dir is not None and not os.path.isdir(args.data_dir):
        raise UsageError(f"argument --data-dir: {args.data_dir!r} is not a directory")


def print_test(test: dict) -> None:
    """The test loss and accuracy lines of ``jaxnet train`` and ``jaxnet evaluate``."""
    print(f"test_loss: {test['loss']:.6f}")
    print(f"test_accuracy: {test['accuracy']:.6f}")
