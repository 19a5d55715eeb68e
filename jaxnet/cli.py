"""The ``jaxnet`` command line: wiring only, no maths.

    jaxnet train --dataset fashion_mnist --epochs 10 --json run.json --save model.jaxnet
    jaxnet evaluate model.jaxnet --dataset fashion_mnist
    jaxnet predict model.jaxnet --input x.npy --output y.npy --probabilities
    jaxnet export model.jaxnet model.stablehlo --format stablehlo
    jaxnet serve model.stablehlo --port 8000
    jaxnet data info fashion_mnist
    jaxnet data prepare kmnist --data-dir ~/kmnist
    jaxnet bench depth-activation --family transformer --depths 2 8 32

Bad options exit with code 2 and one line naming the option; a dataset that no source has exits
with code 1 and one line saying what to do. Never a traceback for either.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings

_T_START = time.perf_counter()

from jaxnet import _cli_bench, _cli_saved  # noqa: E402 - after the start time
from jaxnet._cli_common import UsageError  # noqa: E402
from jaxnet._cli_common import check_data_dir as _check_data_dir  # noqa: E402
from jaxnet._cli_common import option as _option  # noqa: E402
from jaxnet._cli_common import print_test as _print_test  # noqa: E402
from jaxnet._cli_common import wrap as _wrap  # noqa: E402

MODELS = ("mlp", "convnet", "resnet")
DEFAULT_DATASET = "fashion_mnist"  # what `apt-get install dataset-fashion-mnist` provides


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad option in one line (no usage block) and exits 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="jaxnet", description="Neural networks as pure JAX functions.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    t = sub.add_parser("train", help="train a network on a dataset and evaluate it on the "
                                     "test split")
    t.add_argument("--dataset", default=DEFAULT_DATASET,
                   help=f"mnist, fashion_mnist, kmnist, cifar10 (default: {DEFAULT_DATASET})")
    t.add_argument("--data-dir", help="directory of MNIST-format IDX files (or a tfds data dir)")
    t.add_argument("--model", default="mlp", choices=MODELS,
                   help="mlp: the Keras example's MLP (--hidden, --activation); convnet: "
                        "Keras's simple convnet; resnet: He et al.'s CIFAR ResNet (--depth)")
    t.add_argument("--depth", type=int, default=20, help="resnet depth, 6n+2 (default: 20)")
    t.add_argument("--augment", action="store_true",
                   help="resnet: random 4-pixel crops and flips in training")
    t.add_argument("--summary", action="store_true", help="print the network's layers first")
    t.add_argument("--hidden", type=int, nargs="*", default=[64, 64], metavar="WIDTH",
                   help="hidden layer widths (default: 64 64)")
    t.add_argument("--activation", default="relu", help="hidden activation (default: relu)")
    t.add_argument("--init", default=None, help="weight initialiser (default: per activation)")
    t.add_argument("--optimizer", default="adam", help="optimizer name (default: adam)")
    t.add_argument("--lr", type=float, default=1e-3, help="learning rate (default: 1e-3)")
    t.add_argument("--epochs", type=int, default=10, help="passes over the data (default: 10)")
    t.add_argument("--batch-size", type=int, default=128,
                   help="examples per step (default: 128)")
    t.add_argument("--validation-split", type=float, default=0.2,
                   help="fraction of the training data held out, 0 means none (default: 0.2)")
    t.add_argument("--seed", type=int, default=0,
                   help="random seed of initialisation, shuffling and dropout (default: 0)")
    t.add_argument("--json", metavar="PATH", help="write configuration and results here")
    t.add_argument("--save", metavar="PATH",
                   help="save the trained model to this file (for jaxnet evaluate/predict, "
                        "jaxnet.load_model)")
    t.add_argument("--verbose", type=int, default=1, choices=(0, 1, 2),
                   help="0 silent, 1 a progress bar per epoch, 2 a line per epoch (default: 1)")
    t.add_argument("--precision", default="f32", choices=("f32", "bf16"),
                   help="bf16: mixed precision, compute in bfloat16 with float32 parameters "
                        "(the fast path on TPUs; default: f32)")
    t.add_argument("--no-compile-cache", action="store_true",
                   help="do not use JAX's persistent compilation cache")
    t.add_argument("--checkpoint-dir", metavar="DIR", help="save the training state here")
    t.add_argument("--checkpoint-every", type=int, default=1, metavar="N",
                   help="checkpoint every N epochs (default: 1)")
    t.add_argument("--keep-checkpoints", type=int, default=3, metavar="K",
                   help="keep the newest K checkpoints (default: 3)")
    t.add_argument("--resume", action="store_true",
                   help="continue from the newest valid checkpoint in --checkpoint-dir")
    t.add_argument("--data-parallel", action="store_true", default=None,
                   help="split each batch over all devices (default: when there are several)")
    t.add_argument("--coordinator", metavar="HOST:PORT",
                   help="multi-process run: process 0's address (with --num-processes, "
                        "--process-id)")
    t.add_argument("--num-processes", type=int, metavar="N")
    t.add_argument("--process-id", type=int, metavar="I")
    t.set_defaults(func=_train)

    e = sub.add_parser("evaluate", help="test loss and accuracy of a saved model")
    e.add_argument("model", help="a file of jaxnet train --save (or jaxnet.save_model)")
    e.add_argument("--dataset", default=DEFAULT_DATASET,
                   help=f"whose test split to use (default: {DEFAULT_DATASET})")
    e.add_argument("--data-dir", help="directory of MNIST-format IDX files")
    e.add_argument("--batch-size", type=int, default=1024,
                   help="examples per forward pass (default: 1024)")
    e.set_defaults(func=_cli_saved.evaluate)

    p = sub.add_parser("predict", help="a saved model's outputs for the examples in a .npy file")
    p.add_argument("model", help="a file of jaxnet train --save (or jaxnet.save_model)")
    p.add_argument("--input", required=True, metavar="X.npy",
                   help="examples (N, ...) or one example, as the model was trained on them")
    p.add_argument("--output", required=True, metavar="Y.npy", help="where to write the outputs")
    p.add_argument("--probabilities", action="store_true",
                   help="class probabilities instead of logits")
    p.add_argument("--batch-size", type=int, default=1024,
                   help="examples per forward pass (default: 1024)")
    p.set_defaults(func=_cli_saved.predict)

    _cli_saved.add_parsers(sub)
    _cli_bench.add_parser(sub, _Parser)

    d = sub.add_parser("data", help="inspect or prepare datasets")
    dsub = d.add_subparsers(dest="data_command", required=True, parser_class=_Parser)
    for name, func, helptext in (("info", _data_info, "counts, shapes and source"),
                                 ("prepare", _data_prepare, "convert once into the local cache")):
        p = dsub.add_parser(name, help=helptext)
        p.add_argument("name", help="dataset name")
        p.add_argument("--data-dir", help="directory of MNIST-format IDX files, or a "
                       "tensorflow-datasets data directory")
        p.set_defaults(func=func)
    dsub.choices["info"].add_argument("--verify", action="store_true",
                                      help="recompute the cache's checksums")
    prep = dsub.choices["prepare"]
    prep.add_argument("--out", metavar="DIR",
                      help="also write the dataset to DIR for streaming (data.open_prepared, "
                      "fit(network, ds.train)); DIR must be new or empty")
    prep.add_argument("--format", choices=("npy", "array_record"), default="npy",
                      help="DIR's layout with --out: npy memory maps (fastest) or "
                      "ArrayRecord shards (default npy)")
    return parser


def main(argv=None) -> int:
    """Run the ``jaxnet`` command line on ``argv`` (default ``sys.argv[1:]``) and return its
    exit status: 0, 2 for an invalid option or value (one line naming it), 1 for a dataset no
    source has."""
    args = build_parser().parse_args(argv)
    if args.command == "bench" and args.family == "mlp":
        from jaxnet._env import use_all_cpu_cores

        # MLP sweeps shard their many small members over the CPU cores; a transformer's
        # matrix multiplies are large enough for XLA to spread one member over them (a
        # group of one member on one of two devices ran its epoch 1.6x slower)
        use_all_cpu_cores()
    from jaxnet.data import DatasetUnavailableError

    # Warnings (a skipped corrupt checkpoint, a non-finite loss) as one line each.
    warnings.showwarning = lambda message, category, *rest, **kw: print(
        f"jaxnet {args.command}: warning: {message}", file=sys.stderr)

    try:
        return args.func(args) or 0
    except (UsageError, ValueError, TypeError) as err:
        print(f"jaxnet {args.command}: error: {err}", file=sys.stderr)
        return 2
    except DatasetUnavailableError as err:
        print(f"jaxnet {args.command}: error: {err}", file=sys.stderr)
        return 1


def _train(args) -> int:
    _option("--epochs", args.epochs >= 1, "an integer >= 1", args.epochs)
    _option("--batch-size", args.batch_size >= 1, "an integer >= 1", args.batch_size)
    _option("--lr", args.lr > 0 and args.lr != float("inf"), "a number > 0", args.lr)
    _option("--validation-split", 0 <= args.validation_split < 1, "a number in [0, 1)",
            args.validation_split)
    _option("--hidden", all(h >= 1 for h in args.hidden), "widths >= 1", args.hidden)
    _option("--checkpoint-every", args.checkpoint_every >= 1, "an integer >= 1",
            args.checkpoint_every)
    _option("--keep-checkpoints", args.keep_checkpoints >= 1, "an integer >= 1",
            args.keep_checkpoints)
    _option("--augment", not args.augment or args.model == "resnet", "--model resnet",
            args.model)
    _option("--resume", not args.resume or args.checkpoint_dir is not None,
            "--checkpoint-dir DIR as well", "--resume")
    if args.checkpoint_dir is not None and os.path.exists(args.checkpoint_dir) and not (
            os.path.isdir(args.checkpoint_dir)):
        raise UsageError(f"argument --checkpoint-dir: {args.checkpoint_dir!r} is not a directory")
    multi = (args.coordinator, args.num_processes, args.process_id)
    _option("--coordinator", all(v is None for v in multi) or all(v is not None for v in multi),
            "--coordinator, --num-processes and --process-id together", "only some of them")
    if args.coordinator is not None:
        from jaxnet import parallel

        _wrap("--coordinator", parallel.initialize, args.coordinator, args.num_processes,
              args.process_id)
    from jaxnet import activations, data, init, train

    _wrap("--dataset", data.spec_for, args.dataset)
    _wrap("--activation", activations.get, args.activation)
    _wrap("--optimizer", train.get_optimizer, args.optimizer, args.lr)
    if args.init is not None:
        _wrap("--init", init.canonical, args.init)
    if args.model == "resnet":
        from jaxnet import models

        _wrap("--depth", models.resnet, args.depth)  # its own check, before loading data
    _check_data_dir(args)
    if args.save is not None and os.path.isdir(args.save):
        raise UsageError(f"argument --save: {args.save!r} is a directory; expected a file path")

    from jaxnet import layers

    t_load = time.perf_counter()
    ds = data.load(args.dataset, data_dir=args.data_dir)
    load_s = time.perf_counter() - t_load
    net = _network(args, ds)
    if args.summary:
        layers.summary(net, ds.input_shape)
    from jaxnet import inference

    test_program = inference.PrepareEvaluate(net, ds.test.x, ds.test.y, precision=args.precision)
    theta, history = train.fit(
        net, ds.train.x, ds.train.y, optimizer=args.optimizer, learning_rate=args.lr,
        epochs=args.epochs, batch_size=args.batch_size, validation_split=args.validation_split,
        seed=args.seed, verbose=args.verbose,
        compile_cache=False if args.no_compile_cache else None,
        checkpoint_dir=args.checkpoint_dir, checkpoint_every=args.checkpoint_every,
        keep_checkpoints=args.keep_checkpoints, resume=args.resume,
        data_parallel=args.data_parallel, precision=args.precision, callbacks=[test_program])
    if history.stop_reason:
        print(history.stop_reason, file=sys.stderr)
    test_program.join()
    test = train.evaluate(net, theta, ds.test.x, ds.test.y, precision=args.precision)
    total_s = time.perf_counter() - _T_START
    if args.json:
        report = {
            "config": {k: v for k, v in vars(args).items() if k != "func"},
            "network": layers.to_config(net),
            "dataset": {"name": ds.name, "source": ds.source, "train": len(ds.train),
                        "test": len(ds.test)},
            "epochs": [{"epoch": i + 1, "wall_s": t,
                        **{k: v[i] for k, v in history.history.items()}}
                       for i, t in enumerate(history.epoch_times)],
            "compile_s": history.compile_time,
            "devices": history.devices,
            "processes": args.num_processes or 1,
            "load_s": load_s,
            "total_s": total_s,
            "stop_reason": history.stop_reason,
            "test": test,
            "params_sha256": train.params_sha256(theta),
        }
        write_json_atomic(args.json, report)
    if args.save is not None and _process_index() == 0:
        from jaxnet import saving

        saving.save_model(args.save, net, theta, input_shape=ds.input_shape,
                          input_dtype=ds.train.x.dtype, loss="softmax_cross_entropy",
                          class_names=ds.class_names)
        print(f"saved: {args.save}")
    _print_test(test)
    return 0


def _process_index() -> int:
    import jax

    return jax.process_index()


def _network(args, ds):
    from jaxnet import layers, models

    if args.model == "convnet":
        return models.keras_convnet(ds.num_classes, ds.input_shape)
    if args.model == "resnet":
        return models.resnet(args.depth, ds.num_classes, ds.input_shape, augment=args.augment)
    return layers.mlp([*args.hidden, ds.num_classes], args.activation, init=args.init,
                      flatten_input=True, input_scale=1 / 255)


def _data_info(args) -> int:
    from jaxnet import data

    ds = data.load(args.name, data_dir=args.data_dir)
    print(f"dataset: {ds.name}")
    print(f"source: {ds.source}")
    if isinstance(ds, data.TextDataset):  # a corpus: characters, read from its source
        for split in ("train", "test"):
            s = getattr(ds, split)
            print(f"{split}: {len(s):,} characters in {len(s.documents)} document(s)")
        print(f"vocabulary: {ds.vocab_size} characters")
        if args.verify:
            print("cache checksums: none (a corpus is read from its source, not cached)")
        return 0
    for split in ("train", "test"):
        s = getattr(ds, split)
        print(f"{split}: {len(s)} examples, x {s.x.dtype}{list(s.x.shape)}, y {s.y.dtype}")
    print(f"classes ({ds.num_classes}): {', '.join(ds.class_names)}")
    if ds.vocab:
        print(f"vocabulary: {len(ds.vocab)} words (id 0 {ds.vocab[0]}, id 1 {ds.vocab[1]})")
    if args.verify:
        data.verify_cache(args.name)
        print("cache checksums: ok")
    return 0


def _data_prepare(args) -> int:
    from jaxnet import data

    ds = data.load(args.name, data_dir=args.data_dir)
    if isinstance(ds, data.TextDataset):
        if args.out:
            raise ValueError(f"--out: {ds.name} is a corpus of characters; only datasets "
                             f"of examples are written for streaming")
        print(f"{ds.name}: {len(ds.train):,} train, {len(ds.test):,} test characters, read "
              f"from {ds.source} (a corpus is not cached)")
        return 0
    print(f"{ds.name}: {len(ds.train)} train, {len(ds.test)} test examples cached; {ds.source}")
    if args.out:
        out = data.prepare(ds, args.out, format=args.format)
        print(f"written to {out} ({args.format}); stream it with "
              f"jaxnet.data.open_prepared({str(out)!r})")
    return 0


def write_json_atomic(path: str, obj) -> None:
    """Write JSON to ``path`` atomically (see :func:`jaxnet._io.atomic_write`)."""
    from jaxnet._io import atomic_write

    atomic_write(path, json.dumps(obj, indent=2).encode())


def run() -> None:
    """The ``jaxnet`` command: :func:`main`, then the process ends without tearing JAX down
    (``jaxnet._env.exit_without_teardown``)."""
    from jaxnet._env import exit_without_teardown

    exit_without_teardown(main())


if __name__ == "__main__":
    run()
