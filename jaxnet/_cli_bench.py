"""``jaxnet bench``: the studies on the command line (wiring only).

    jaxnet bench depth-activation --archs plain residual-ln --depths 1 2 4 8
    jaxnet bench depth-activation --family transformer --archs post-ln pre-ln --depths 2 8 32

``--family mlp`` (the default) is :func:`jaxnet.study.depth_activation`, ``--family
transformer`` :func:`jaxnet.transformer_study.depth_study`; an option left out takes its
family's default (:data:`DEFAULTS`), and an option of the other family is refused.
"""

from __future__ import annotations

import os

from jaxnet._cli_common import UsageError, option, wrap

FAMILIES = ("mlp", "transformer")
#: Each family's defaults of the options both share.
DEFAULTS = {
    "mlp": {"archs": ["plain"], "dataset": "fashion_mnist", "depths": [1, 2, 3, 5, 8],
            "width": 64, "activations": ["sigmoid", "tanh", "relu"], "seeds": 2, "epochs": 5,
            "batch_size": 128, "lr": 1e-3, "validation_split": 0.2, "out": "depth_activation"},
    "transformer": {"archs": ["pre-ln", "post-ln"], "dataset": "shakespeare",
                    "depths": [2, 8, 32], "width": 128, "activations": ["gelu"], "seeds": 1,
                    "epochs": 1, "batch_size": 32, "lr": 1e-3, "validation_split": 0.1,
                    "out": "transformer_depth"},
}
#: Options of one family only: option -> (family, its default).
ONLY = {"data_dir": ("mlp", None), "init": ("mlp", None), "sequential": ("mlp", False),
        "warmup": ("transformer", [0]), "num_heads": ("transformer", 4),
        "context": ("transformer", 128), "dropout": ("transformer", 0.0),
        "train_chars": ("transformer", 131072), "test_chars": ("transformer", 32768)}


def _both(key: str) -> str:
    return ", ".join(f"{f}: {_shown(DEFAULTS[f][key])}" for f in FAMILIES)


def _shown(value) -> str:
    return " ".join(map(str, value)) if isinstance(value, list) else str(value)


def add_parser(sub, parser_class) -> None:
    """``bench`` and its ``depth-activation`` subcommand on the subparsers ``sub``."""
    b = sub.add_parser("bench", help="studies: depth-activation")
    bsub = b.add_subparsers(dest="bench_command", required=True, parser_class=parser_class)
    s = bsub.add_parser("depth-activation",
                        help="train a depth x activation grid of MLPs or transformers")
    s.add_argument("--family", default="mlp", choices=FAMILIES,
                   help="mlp: MLPs on an image dataset; transformer: character-level "
                        "transformer language models (default: mlp)")
    s.add_argument("--archs", nargs="+", metavar="ARCH",
                   help="mlp: plain, residual, each with -bn or -ln, rezero; transformer: "
                        "pre-ln, post-ln, rezero, deepnorm, admin, pure-attention, "
                        f"attention-skip ({_both('archs')})")
    s.add_argument("--dataset", help=f"the dataset ({_both('dataset')})")
    s.add_argument("--data-dir", help="mlp: directory of MNIST-format IDX files")
    s.add_argument("--depths", type=int, nargs="+", metavar="D",
                   help=f"hidden layers or transformer blocks ({_both('depths')})")
    s.add_argument("--width", type=int, help=f"units per layer ({_both('width')})")
    s.add_argument("--activations", nargs="+", metavar="NAME",
                   help="hidden (FFN) activations; gated swiglu/geglu keep the FFN's "
                        f"parameters with two thirds of its width ({_both('activations')})")
    s.add_argument("--seeds", type=int, help=f"seeds per cell ({_both('seeds')})")
    s.add_argument("--epochs", type=int, help=f"epochs ({_both('epochs')})")
    s.add_argument("--batch-size", type=int, help=f"batch size ({_both('batch_size')})")
    s.add_argument("--optimizer", default="adam", help="optimizer name (default: adam)")
    s.add_argument("--lr", type=float, help=f"learning rate ({_both('lr')})")
    s.add_argument("--init", default=None,
                   help="mlp: glorot|he|lecun|standard|... (default: per activation)")
    s.add_argument("--validation-split", type=float,
                   help=f"fraction held out for validation ({_both('validation_split')})")
    s.add_argument("--warmup", type=int, nargs="+", metavar="STEPS",
                   help="transformer: linear learning-rate warm-up steps; several values "
                        "train each member with each (default: 0)")
    s.add_argument("--num-heads", type=int, help="transformer: attention heads (default: 4)")
    s.add_argument("--context", type=int,
                   help="transformer: characters per training window (default: 128)")
    s.add_argument("--dropout", type=float, help="transformer: dropout rate (default: 0)")
    s.add_argument("--train-chars", type=int, metavar="N",
                   help="transformer: train on the first N characters of the corpus "
                        "(default: 131072)")
    s.add_argument("--test-chars", type=int, metavar="N",
                   help="transformer: held-out bits per character on the first N characters "
                        "of the test plays (default: 32768)")
    s.add_argument("--out", metavar="DIR",
                   help=f"where results and plots go ({_both('out')})")
    s.add_argument("--sequential", action="store_true",
                   help="mlp: train the same grid one model at a time (speed comparison)")
    s.add_argument("--no-plots", action="store_true")
    s.add_argument("--verbose", type=int, default=1, choices=(0, 1),
                   help="0 silent, 1 a line per group and epoch (default: 1)")
    s.set_defaults(func=depth_activation)


def resolve(args) -> None:
    """Fill the options left out with ``args.family``'s defaults; refuse an option of the
    other family."""
    for key, (family, default) in ONLY.items():
        value = getattr(args, key)
        if value not in (None, False) and family != args.family:
            raise UsageError(f"argument --{key.replace('_', '-')}: only with --family "
                             f"{family}")
        if value is None:
            setattr(args, key, default)
    for key, default in DEFAULTS[args.family].items():
        if getattr(args, key) is None:
            setattr(args, key, default)


def depth_activation(args) -> int:
    resolve(args)
    for name in ("depths", "warmup"):
        values = getattr(args, name)
        low = 0 if name == "warmup" else 1
        option(f"--{name}", all(v >= low for v in values), f"integers >= {low}", values)
    for name in ("width", "seeds", "epochs", "batch_size", "num_heads", "context",
                 "train_chars", "test_chars"):
        value = getattr(args, name)
        option(f"--{name.replace('_', '-')}", value >= 1, "an integer >= 1", value)
    option("--lr", args.lr > 0 and args.lr != float("inf"), "a number > 0", args.lr)
    option("--validation-split", 0 <= args.validation_split < 1, "a number in [0, 1)",
           args.validation_split)
    option("--dropout", 0 <= args.dropout < 1, "a number in [0, 1)", args.dropout)
    from jaxnet import (
        _checks,
        activations,
        data,
        init,
        models,
        train,
        transformer,
        transformer_archs,
    )

    archs = transformer_archs.TRANSFORMER_ARCHS if args.family == "transformer" else models.ARCHS
    for arch in args.archs:
        wrap("--archs", _checks.one_of, "arch", arch, archs)
    if args.family == "transformer":
        wrap("--dataset", _checks.one_of, "dataset", args.dataset, data.TEXT_DATASETS)
    else:
        wrap("--dataset", data.spec_for, args.dataset)
    wrap("--optimizer", train.get_optimizer, args.optimizer, args.lr)
    for name in args.activations:
        if not (args.family == "transformer" and name in transformer.GATED):
            wrap("--activations", activations.get, name)
        option("--activations", name != "softmax", "hidden activations", name)
    if args.init is not None:
        wrap("--init", init.canonical, args.init)
    common = dict(dataset=args.dataset, depths=args.depths, width=args.width,
                  activations=args.activations, seeds=args.seeds, epochs=args.epochs,
                  batch_size=args.batch_size, optimizer=args.optimizer, learning_rate=args.lr,
                  validation_split=args.validation_split, out=args.out,
                  plots=not args.no_plots, verbose=args.verbose, archs=args.archs)
    if args.family == "transformer":
        from jaxnet import transformer_study as study

        option("--width", args.width % args.num_heads == 0,
               f"a multiple of --num-heads {args.num_heads}", args.width)
        option("--train-chars", args.train_chars > args.context,
               f"more characters than --context {args.context}", args.train_chars)
        option("--test-chars", args.test_chars > args.context,
               f"more characters than --context {args.context}", args.test_chars)
        report = study.depth_study(warmups=args.warmup, num_heads=args.num_heads,
                                   context=args.context, dropout=args.dropout,
                                   train_chars=args.train_chars, test_chars=args.test_chars,
                                   **common)
    else:
        from jaxnet import study

        report = study.depth_activation(data_dir=args.data_dir, init=args.init,
                                        sequential=args.sequential, **common)
    print(study.markdown(report), end="")
    print(f"wrote {os.path.join(args.out, 'results.json')}")
    return 0
