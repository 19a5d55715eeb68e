"""jaxnet: neural networks as pure JAX functions.

theta is a pytree, the network is a pure function f(x, theta), ``jax.grad`` differentiates the
loss L(theta, batch), and ``fit`` compiles each epoch into one XLA program.

Submodules are imported on first use, so ``import jaxnet.data`` does not import JAX.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    # networks
    "Network": "_typing", "State": "_typing",
    "dense": "layers", "activation": "layers", "flatten": "layers", "rescale": "layers",
    "dropout": "layers", "reshape": "layers", "mlp": "layers", "learnable_scale": "layers",
    "conv2d": "conv", "depthwise_conv2d": "conv", "separable_conv2d": "conv",
    "max_pool": "pooling", "avg_pool": "pooling", "global_avg_pool": "pooling",
    "global_max_pool": "pooling",
    # (the ``parallel`` combinator is jaxnet.layers.parallel: jaxnet.parallel is the module of
    # data parallelism)
    "serial": "combinators", "residual": "combinators", "fanout": "combinators",
    "fanin_sum": "combinators", "fanin_concat": "combinators", "identity": "combinators",
    "batch_norm": "norm", "layer_norm": "norm", "rms_norm": "norm",
    "embedding": "embeddings", "positional_embedding": "embeddings",
    "sinusoidal_positions": "embeddings", "multi_head_attention": "attention",
    "conv1d": "temporal_conv", "lstm": "recurrent", "gru": "recurrent",
    "bidirectional": "recurrent",
    "transformer_block": "transformer", "feed_forward": "transformer", "glu": "transformer",
    "random_flip": "augment", "random_crop": "augment",
    "keras_convnet": "models", "resnet": "models", "deep_mlp": "models",
    "transformer_lm": "models", "text_classifier": "models", "generate": "sampling",
    "summary": "network", "count_params": "network", "check_params": "network",
    "output_shape": "network", "to_config": "network", "from_config": "network",
    "register_layer": "network",
    # losses and training
    "make_loss": "losses", "make_objective": "losses", "train_step": "step",
    "fit": "train", "evaluate": "inference", "predict": "inference", "History": "loop",
    "EarlyStopping": "callbacks", "Callback": "callbacks", "get_optimizer": "optimizers",
    "params_sha256": "train",
    "save_model": "saving", "load_model": "saving",
    "enable_compile_cache": "compiling",
    "export": "exporting", "load_exported": "exported",
}
_SUBMODULES = ("activations", "init", "layers", "conv", "pooling", "combinators", "norm", "augment",
               "models", "network", "losses", "metrics", "optimizers", "step", "epoch", "loop",
               "callbacks", "writers", "compiling", "train", "inference", "saving", "sweep",
               "diagnostics", "study", "plot", "checkpoint", "data", "mean_field", "parallel",
               "cli", "embeddings", "attention", "transformer", "recurrent", "sampling",
               "sweep_members",
               "temporal_conv", "masking", "exporting", "exported", "serving", "streaming")

__all__ = sorted([*_EXPORTS, *_SUBMODULES, "__version__"])


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f"jaxnet.{_EXPORTS[name]}"), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f"jaxnet.{name}")
    else:
        raise AttributeError(f"module 'jaxnet' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__():
    return __all__
