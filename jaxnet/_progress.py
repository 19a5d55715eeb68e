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
    return _tqdm()(total=steps, desc=f"Epoch {epoch + 1}/{epochs}", unit="step", leave=True,
                file=sys.stderr, dynamic_ncols=True)


def _tqdm():
    """tqdm's notebook bar where Jupyter can draw it (ipywidgets installed), its text bar
    otherwise: ``tqdm.auto`` alone warns "IProgress not found" in a notebook without
    ipywidgets (a Colab or plain Jupyter kernel) before falling back to the text bar."""
    import importlib.util

    if importlib.util.find_spec("ipywidgets") is not None:
        from tqdm.auto import tqdm
    else:
        from tqdm.std import tqdm
    return tqdm


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


class EpochBar:
    """One model's progress (``fit``): a tqdm bar per epoch (verbose 1), one line per epoch
    (verbose 2), or nothing (0)."""

    def __init__(self, verbose: int, epochs: int, steps: int):
        self.verbose, self.epochs, self.steps, self._bar = verbose, epochs, steps, None

    def begin(self, epoch: int) -> None:
        self._bar = bar(self.verbose, epoch, self.epochs, self.steps)

    def advance(self, steps: int) -> None:
        """``steps`` more steps of the epoch dispatched (a streamed epoch's chunks)."""
        if self._bar is not None:
            self._bar.update(steps)

    def end(self, epoch: int, rows: dict, seconds: float, active: int) -> None:
        close(self._bar, self.verbose, epoch, self.epochs, rows.get(0, {}), seconds)


class GroupLines:
    """A group of models' progress (``fit_many``): one line per epoch to stderr (verbose 1)."""

    def __init__(self, verbose: int, epochs: int, size: int):
        self.verbose, self.epochs, self.size = verbose, epochs, size

    def begin(self, epoch: int) -> None:
        pass

    def end(self, epoch: int, rows: dict, seconds: float, active: int) -> None:
        if self.verbose:
            print(f"  epoch {epoch + 1}/{self.epochs}: {active}/{self.size} members active, "
                  f"{seconds:.2f} s", file=sys.stderr, flush=True)
