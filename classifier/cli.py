"""`python -m classifier`: a thin command line over the library.

The last line printed on stdout is one JSON object, so scripts can parse it; any error exits with status 2 and
one line on stderr, never a traceback. Progress bars go to stderr.

This is the one place in the package that reads the environment (`Environment`): the library takes every
setting as an argument, and the command line maps flags and these variables onto them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

#: Commands that run TensorFlow, so the process sets its threads before starting. `predict` passes them to the
#: Scorer instead, which sets TensorFlow's only if Keras serves (LiteRT needs no TensorFlow at all).
_TENSORFLOW_COMMANDS = frozenset({"train", "evaluate"})


class CommandError(Exception):
    """A user-facing failure: printed as one line, exit status 2."""


@dataclass(frozen=True)
class Environment:
    """The settings the command line takes from environment variables, to pass on to the library as arguments.

    ``VIGIA_TF_THREADS``: TensorFlow's threads (`classifier.runtime.configure_threads`; unset: its default).
    ``VIGIA_BACKBONE_CACHE``: where converted backbones and the default bottleneck cache live (unset:
    ``~/.cache/vigia``). ``VIGIA_BACKBONE_WEIGHTS``: a local weights file, the default of ``--backbone-weights``
    for backbones that take one. ``FASHION_MNIST_DIR``: where the Fashion-MNIST IDX files are (unset: the Debian
    package's directory). ``VIGIA_RUNTIME``: ``litert`` (default: a version's checked LiteRT file when it has
    one) or ``keras``, for ``predict``. An empty variable counts as unset.
    """

    tf_threads: int | None = None
    runtime: str = "litert"
    backbone_cache: Path | None = None
    backbone_weights: str | None = None
    fashion_mnist_dir: Path | None = None

    @classmethod
    def read(cls, environ: Mapping[str, str] | None = None) -> Environment:
        """The settings in ``environ`` (default: this process's environment)."""
        environ = os.environ if environ is None else environ

        def value(name: str) -> str | None:
            return environ.get(name, "").strip() or None

        def directory(name: str) -> Path | None:
            raw = value(name)
            return Path(raw).expanduser() if raw else None

        threads = value("VIGIA_TF_THREADS")
        try:
            tf_threads = int(threads) if threads else None
        except ValueError:
            raise CommandError(f"VIGIA_TF_THREADS must be a whole number, got {threads!r}") from None
        runtime = (value("VIGIA_RUNTIME") or "litert").lower()
        if runtime not in ("litert", "keras"):
            raise CommandError(f"VIGIA_RUNTIME must be litert or keras, got {runtime!r}")
        return cls(
            tf_threads=tf_threads,
            runtime=runtime,
            backbone_cache=directory("VIGIA_BACKBONE_CACHE"),
            backbone_weights=value("VIGIA_BACKBONE_WEIGHTS"),
            fashion_mnist_dir=directory("FASHION_MNIST_DIR"),
        )


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        """Raise instead of printing usage and exiting: every error leaves as one line, status 2."""
        raise CommandError(f"{self.prog}: {message}")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m classifier", description="Train, evaluate and run Vigia's image classifier.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    train = commands.add_parser("train", help="train a new model version from DIR/<label>/*.jpg|png|webp")
    train.add_argument("--data", required=True, type=Path)
    train.add_argument("--registry", required=True, type=Path)
    train.add_argument("--prohibited", nargs="+", action="extend", default=[], metavar="LABEL")
    train.add_argument("--allowed-label", help="the label meaning nothing prohibited (default: the only other one)")
    train.add_argument("--backbone")
    train.add_argument("--image-size", type=int)
    train.add_argument("--epochs", type=int)
    train.add_argument("--distort", action="store_true", default=None)
    train.add_argument("--seed", type=int)
    train.add_argument("--activate", action="store_true")
    train.add_argument("--fine-tune-layers", type=int)
    train.add_argument("--fine-tune-epochs", type=int)
    train.add_argument("--feature-layer", help='layer(s) to take features from, "+"-joined; "output" = the last')
    train.add_argument("--pooling", choices=["average", "symmetric"])
    train.add_argument("--l2", type=float)
    train.add_argument("--hidden-units", type=int)
    train.add_argument("--dropout", type=float)
    train.add_argument("--learning-rate", type=float)
    train.add_argument("--batch-size", type=int)
    train.add_argument("--test-share", type=float)
    train.add_argument("--validation-share", type=float)
    train.add_argument("--backbone-weights", help="local weights file (default: $VIGIA_BACKBONE_WEIGHTS)")
    train.add_argument("--cache-dir", type=Path, help="bottleneck cache (default: $VIGIA_BACKBONE_CACHE/bottlenecks)")
    train.add_argument("--no-progress", action="store_true")

    evaluate = commands.add_parser("evaluate", help="metrics of a version on every image under DIR (no split)")
    evaluate.add_argument("--registry", required=True, type=Path)
    evaluate.add_argument("--version")
    evaluate.add_argument("--data", required=True, type=Path)
    evaluate.add_argument("--threshold", type=float)
    evaluate.add_argument("--batch-size", type=int, default=32, help="images decoded and scored at a time")

    predict = commands.add_parser("predict", help="label probabilities of images with the active version")
    predict.add_argument("--registry", required=True, type=Path)
    predict.add_argument("--batch-size", type=int, default=32, help="images decoded and scored at a time")
    predict.add_argument("images", nargs="+")

    export = commands.add_parser("export-fashion-mnist", help="write Fashion-MNIST photos as DIR/<label>/*.png")
    export.add_argument("--out", required=True, type=Path)
    export.add_argument("--classes", required=True, help="comma-separated, e.g. Pullover,Coat")
    export.add_argument("--split", required=True, choices=["train", "test"])
    export.add_argument("--per-class", type=int)
    export.add_argument("--size", type=int, default=28)
    export.add_argument("--offset", type=int, default=0)

    mixture = commands.add_parser(
        "export-mixture", help="a prohibited Fashion-MNIST class vs everything else, as DIR/<label>/*.png"
    )
    mixture.add_argument("--out", required=True, type=Path)
    mixture.add_argument("--prohibited", required=True, help="the prohibited class, e.g. Pullover")
    mixture.add_argument("--split", required=True, choices=["train", "test"])
    mixture.add_argument("--per-class", type=int, required=True, help="photos of the prohibited class")
    mixture.add_argument("--allowed-per-class", type=int, help="photos of each other class (default: a third)")
    mixture.add_argument("--synthetic", type=int, help="synthetic blanks and noise (default: as one other class)")
    mixture.add_argument("--allowed-label", default="Allowed")
    return parser


_HPARAM_FLAGS = (
    "backbone",
    "image_size",
    "epochs",
    "distort",
    "seed",
    "fine_tune_layers",
    "fine_tune_epochs",
    "feature_layer",
    "pooling",
    "l2",
    "hidden_units",
    "dropout",
    "learning_rate",
    "batch_size",
    "test_share",
    "validation_share",
    "backbone_weights",
)


def _progress_bar(enabled: bool):
    """A tqdm bar on stderr that follows the training phases; a no-op when disabled.

    It draws only on a terminal (tqdm's ``disable=None``): written to a log or a pipe, every redraw would be a
    line of its own, thousands for one training run.
    """
    if not enabled:
        return None, lambda: None
    from tqdm import tqdm

    state = {"bar": None, "phase": None}

    def progress(phase: str, current: int, total: int) -> None:
        if state["phase"] != phase:
            if state["bar"] is not None:
                state["bar"].close()
            state["bar"] = tqdm(total=total, desc=phase, file=sys.stderr, leave=False, dynamic_ncols=True, disable=None)
            state["phase"] = phase
        bar = state["bar"]
        bar.total = total
        bar.n = current
        bar.refresh()

    def close():
        if state["bar"] is not None:
            state["bar"].close()

    return progress, close


def _hparams(args, environment: Environment):
    """The hyper-parameters the ``train`` flags give, with ``VIGIA_BACKBONE_WEIGHTS`` as the weights default."""
    from classifier.backbones import accepts_weights_file
    from classifier.hparams import HParams

    overrides = {name: getattr(args, name) for name in _HPARAM_FLAGS if getattr(args, name) is not None}
    backbone = overrides.get("backbone", HParams.backbone)
    # Only backbones that load a weights file get the deployment's one: mobilenet_v1 brings its own weights
    # and refuses a file, and the tiny test backbone has none.
    if "backbone_weights" not in overrides and environment.backbone_weights and accepts_weights_file(backbone):
        overrides["backbone_weights"] = environment.backbone_weights
    return HParams(**overrides)


def _train(args, environment: Environment) -> dict:
    from classifier.data import scan_folder
    from classifier.registry import Registry
    from classifier.training import train_model

    hparams = _hparams(args, environment)
    scan = scan_folder(args.data)
    progress, close = _progress_bar(not args.no_progress)
    try:
        result = train_model(
            scan.examples,
            scan.labels,
            args.prohibited,
            hparams,
            cache_dir=args.cache_dir,
            progress=progress,
            backbone_cache=environment.backbone_cache,
            allowed_label=args.allowed_label,
        )
    finally:
        close()
    result.skipped = scan.skipped + result.skipped
    registry = Registry(args.registry)
    version = registry.save(result, metadata={"data": str(args.data), "source": "cli"})
    if args.activate:
        registry.activate(version)
    return {
        "version": version,
        "activated": bool(args.activate),
        "metrics": result.metrics,
        "embedded": result.embedded,
        "cached": result.cached,
        "skipped": [list(item) for item in result.skipped],
        "seconds": round(result.seconds, 3),
        "allowed_label": result.allowed_label,
        "chosen_by_cv": result.chosen_by_cv,
    }


def _evaluate(args, environment: Environment) -> dict:
    from classifier.data import scan_folder
    from classifier.evaluation import evaluate_model
    from classifier.registry import Registry

    loaded = Registry(args.registry).load(args.version)
    scan = scan_folder(args.data)
    metrics = evaluate_model(loaded, scan.examples, threshold=args.threshold, batch_size=_batch_size(args))
    metrics["skipped"] = [list(item) for item in scan.skipped] + metrics["skipped"]
    return metrics


def _batch_size(args) -> int:
    if args.batch_size < 1:
        raise CommandError(f"--batch-size must be positive, got {args.batch_size}")
    return args.batch_size


def _predict(args, environment: Environment) -> dict:
    """Score the images ``--batch-size`` at a time: only one batch of decoded pixels is ever held.

    Decoding every path first and scoring them in one pass needs memory in proportion to the number of paths
    (2,000 photos at 224 px are 1.2 GB of float32 pixels); a batch at a time keeps it at one batch's worth
    whatever the number. Every batch is scored by the same version: a version activated meanwhile is refused
    rather than mixed into one answer.
    """
    from classifier.scoring import Scorer

    batch_size = _batch_size(args)
    scorer = Scorer(args.registry, runtime=environment.runtime, threads=environment.tf_threads)
    predictions: dict[str, dict[str, float]] = {}
    version = None
    for start in range(0, len(args.images), batch_size):
        chunk = args.images[start : start + batch_size]
        prediction = scorer.predict([Path(image) for image in chunk])
        if version is not None and prediction.model_version != version:
            raise CommandError(f"the active version changed from {version} to {prediction.model_version}; run again")
        version = prediction.model_version
        predictions.update(zip(chunk, prediction.probabilities, strict=True))
    return {"model_version": version, "runtime": scorer.status()["runtime"], "predictions": predictions}


def _export(args, environment: Environment) -> dict:
    from classifier.datasets import export_fashion_mnist

    classes = [name.strip() for name in args.classes.split(",") if name.strip()]
    counts = export_fashion_mnist(
        args.out,
        classes,
        split=args.split,
        per_class=args.per_class,
        size=args.size,
        offset=args.offset,
        directory=environment.fashion_mnist_dir,
    )
    return {"out": str(args.out), "split": args.split, "counts": counts}


def _export_mixture(args, environment: Environment) -> dict:
    from classifier.mixture import export_mixture

    counts = export_mixture(
        args.out,
        args.prohibited,
        split=args.split,
        per_class=args.per_class,
        allowed_per_class=args.allowed_per_class,
        synthetic=args.synthetic,
        allowed_label=args.allowed_label,
        directory=environment.fashion_mnist_dir,
    )
    return {"out": str(args.out), "split": args.split, "counts": counts}


COMMANDS = {
    "train": _train,
    "evaluate": _evaluate,
    "predict": _predict,
    "export-fashion-mnist": _export,
    "export-mixture": _export_mixture,
}


def main(argv: list[str] | None = None) -> int:
    """Run one command (``argv``, default the process's arguments) and return its exit status, 0 or 2."""
    from classifier.runtime import configure_threads, quiet_tensorflow_logs

    quiet_tensorflow_logs()
    try:
        args = _parser().parse_args(argv)
        environment = Environment.read()
        if args.command in _TENSORFLOW_COMMANDS:
            configure_threads(environment.tf_threads)
        output = COMMANDS[args.command](args, environment)
    except CommandError as error:
        print(str(error), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 2
    except Exception as error:
        # Every failure, expected (bad data, missing model) or not, is one line: callers parse stdout as JSON.
        message = " ".join(str(error).split()) or type(error).__name__
        print(f"error: {type(error).__name__}: {message}", file=sys.stderr)
        return 2
    print(json.dumps(output, default=str))
    return 0
