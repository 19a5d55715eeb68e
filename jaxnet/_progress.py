"""Keras-style progress output between epochs: a tqdm bar per epoch or one line per epoch."""

from __future__ import annotations

import sys


def ordered(values: dict, metric_fns: dict) -> dict[str, float]:
    """Keras's order: loss, metrics, val_loss, val_metrics."""
    names = ["loss", *metric_fns]
    return {k: float(values[k]) for k in [*names, *(f"val_{n}" for n in names)] if k in values}


def bar(verbose, epoch, epochs, steps):
    if verbose != 1:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=steps, desc=f"Epoch {epoch + 1}/{epochs}", unit="step", leave=True,
                file=sys.stderr, dynamic_ncols=True)


def format_values(values: dict) -> str:
    return " - ".join(f"{k}: {v:.4f}" for k, v in values.items())


def close(bar, verbose, epoch, epochs, values, seconds):
    if bar is not None:
        bar.update(bar.total - bar.n)
        bar.set_postfix_str(format_values(values), refresh=True)
        bar.close()
    elif verbose == 2:
        print(f"Epoch {epoch + 1}/{epochs} - {seconds:.2f}s - {format_values(values)}",
              file=sys.stderr, flush=True)
