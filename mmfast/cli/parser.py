"""The argument parser of every ``mmfast`` sub-command. Only argparse and the training config (a
dataclass, whose defaults the options take) are imported here, so that ``--help`` and argument
errors answer at once; each command imports the trainer, the models and the data when it runs."""

from __future__ import annotations

import argparse
from typing import Any, NoReturn

from mmfast.train.config import (
    AUTOCAST_CHOICES,
    DATASET_LR,
    DEFAULT_LR,
    DEVICE_CHOICES,
    LOSS_CHOICES,
    TASK_CHOICES,
    TEXT_ENCODER_CHOICES,
    config_defaults,
)

# The names mmfast.models and mmfast.data define, repeated so that the parser imports neither.
FUSIONS = ("concat", "gated", "attention", "transformer", "film")
DATASETS = ("av-digits", "easy-vqa", "scenes", "sort-of-clevr", "synthetic")


class OneLineErrorParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are a single line (``prog: error: ...``), exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


def _modalities(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise argparse.ArgumentTypeError(f"expected comma-separated modality names, got {text!r}")
    return names


def _add_run_options(parser: argparse.ArgumentParser) -> None:
    """The options of a training run: one per :class:`TrainConfig` field (but ``dataset_options``,
    whose entries are the group below), defaulting to the field's default."""
    defaults = config_defaults()

    def option(flag: str, help: str, **kwargs: Any) -> None:
        # The field is the flag's name (--batch-size: batch_size); its default is written only in
        # TrainConfig. A default of None means "not set" and is explained by the help itself.
        name = flag[2:].replace("-", "_")
        default = defaults[name]
        if default is not None and kwargs.get("action") != "store_true":
            help = f"{help} (default: %(default)s)" if help else "default: %(default)s"
        parser.add_argument(flag, dest=name, default=default, help=help, **kwargs)

    option(
        "--task",
        "classification, image-text retrieval (a dual encoder) or visual question answering (vqa)",
        choices=TASK_CHOICES,
    )
    option("--dataset", "vqa: easy-vqa or sort-of-clevr", choices=DATASETS)
    option("--fusion", "film: vqa only", choices=FUSIONS)
    option(
        "--modalities",
        "comma-separated subset to train on, e.g. image or image,audio (default: all of the dataset's)",
        type=_modalities,
        metavar="LIST",
    )
    option(
        "--epochs",
        "maximum epochs (default: 10; vqa: 4; sort-of-clevr: see its README section)",
        type=_positive_int,
    )
    option("--batch-size", "per process", type=_positive_int)
    own_rates = "".join(f"; {name}: {rate:g}" for name, rate in DATASET_LR.items())
    option("--lr", f"peak AdamW learning rate (default: {DEFAULT_LR:g}{own_rates})", type=float)
    option("--weight-decay", "", type=float)
    option("--warmup-ratio", "warm-up fraction", type=float)
    option("--grad-clip", "max gradient norm, 0 = off", type=float)
    option(
        "--patience",
        "early stopping: epochs without better val accuracy (retrieval: mean recall@1), 0 = off",
        type=int,
    )
    option("--hidden", "encoder / fusion width", type=_positive_int)
    option("--text-encoder", "text / question encoder", choices=TEXT_ENCODER_CHOICES)
    option("--loss", "retrieval: contrastive loss", choices=LOSS_CHOICES)
    option("--embed-dim", "retrieval: size of the joint embedding", type=_positive_int)
    option("--dropout", "dropout before the head", type=float)
    option("--modality-dropout", "train-time probability of dropping a modality", type=float)
    option("--seed", "seeds weights, data order, split", type=int)
    option("--reference", "train the plain-PyTorch twin of the model", action="store_true")
    option("--autocast", "bfloat16 autocast", choices=AUTOCAST_CHOICES)
    option("--device", "", choices=DEVICE_CHOICES)
    data = parser.add_argument_group("dataset options (see mmfast.data.load_dataset)")
    data.add_argument(
        "--image-size",
        type=_positive_int,
        help="resize (scenes: draw) images to this side (easy-vqa: 32; sort-of-clevr: 75)",
    )
    data.add_argument(
        "--corrupt-images", choices=("noise", "occlusion"), help="av-digits: corrupt every image"
    )
    data.add_argument("--corruption-strength", type=float, help="av-digits: in (0, 1], default 0.5")
    data.add_argument("--corrupt-audio", choices=("noise", "masking"), help="av-digits: corrupt the audio")
    data.add_argument("--audio-corruption-strength", type=float, help="av-digits: default 0.5")
    data.add_argument("--num-samples", type=_positive_int, help="synthetic: samples over all splits")
    data.add_argument("--num-classes", type=_positive_int, help="synthetic: 2 to 8 classes")
    data.add_argument("--difficulty", type=float, help="synthetic: in [0, 1], 0 = clean")
    data.add_argument("--n-mels", type=_positive_int, help="synthetic: mel bands of the audio")
    data.add_argument(
        "--num-train",
        type=_positive_int,
        help="scenes: training pairs (5000); easy-vqa: images (3600); sort-of-clevr: images (9600)",
    )
    data.add_argument(
        "--num-val",
        type=_positive_int,
        help="scenes: validation pairs (1000); easy-vqa: images (400); sort-of-clevr: images (200)",
    )
    data.add_argument(
        "--num-test",
        type=_positive_int,
        help="scenes: test gallery pairs (1000); easy-vqa: images (1000); sort-of-clevr: images (200)",
    )
    data.add_argument(
        "--flips",
        action=argparse.BooleanOptionalAction,
        help="sort-of-clevr: flip training images at random, answers following (default: off)",
    )


def _run_train(args: argparse.Namespace) -> int:
    from mmfast.cli.train import run_train

    return run_train(args)


def _run_evaluate(args: argparse.Namespace) -> int:
    from mmfast.cli.train import run_evaluate

    return run_evaluate(args)


def _run_demo(args: argparse.Namespace) -> int:
    from mmfast.train.demo import run_demo

    return run_demo(out_dir=args.out, quick=args.quick, progress=args.progress)


def _run_bench(args: argparse.Namespace) -> int:
    from mmfast.cli.bench import run_bench

    return run_bench(quick=args.quick, report=args.report, pytest_args=args.pytest_args)


def _run_info(args: argparse.Namespace) -> int:
    from mmfast.cli.info import run_info

    return run_info(as_json=args.json)


def build_parser() -> argparse.ArgumentParser:
    """The ``mmfast`` parser; each sub-command's namespace carries its ``run`` function."""
    parser = OneLineErrorParser(
        prog="mmfast",
        description="Fused PyTorch layers for multimodal models: train, evaluate, benchmark.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=OneLineErrorParser)
    commands.required = True

    train = commands.add_parser(
        "train",
        help="train a multimodal classifier, an image-text retrieval model or a VQA model",
        description="Train a multimodal classifier (or, with --task retrieval, an image-text dual encoder "
        "with --loss clip or siglip; with --task vqa --dataset easy-vqa or sort-of-clevr, a visual question "
        "answering model with --fusion concat, gated, attention, film or transformer) and write checkpoints "
        "(last.pt, best.pt), log.jsonl, "
        "curves.png and metrics.json (final test metrics under 'test') to --out. "
        "Under torchrun, trains data-parallel (gloo on CPU, nccl on GPU).",
    )
    train.add_argument(
        "--out", default="runs/train", metavar="DIR", help="output folder (default: %(default)s)"
    )
    train.add_argument(
        "--resume",
        action="store_true",
        help="continue the run saved in DIR/last.pt (its config; other training options are ignored)",
    )
    train.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    train.add_argument("--json", action="store_true", help="print the test metrics as JSON")
    _add_run_options(train)
    train.set_defaults(run=_run_train)

    evaluate = commands.add_parser(
        "evaluate",
        help="evaluate a checkpoint",
        description="Metrics of a checkpoint's weights on a split of the dataset it was trained on "
        "(with --data-seed, on a test set generated afresh with another seed).",
    )
    evaluate.add_argument("checkpoint", metavar="CHECKPOINT", help="a last.pt / best.pt of mmfast train")
    evaluate.add_argument("--split", choices=("train", "val", "test"), default="test", help="default: test")
    devices = [d for d in DEVICE_CHOICES if d != "auto"]
    evaluate.add_argument("--device", choices=devices, default=None, help="default: the run's")
    evaluate.add_argument(
        "--data-seed",
        type=int,
        default=None,
        metavar="N",
        help="evaluate on a test set generated afresh with seed N (generated datasets: sort-of-clevr)",
    )
    evaluate.add_argument("--json", action="store_true", help="print the metrics as JSON")
    evaluate.set_defaults(run=_run_evaluate)

    demo = commands.add_parser(
        "demo",
        help="the AV-digits demo: fusions, single-modality baselines, corrupted images, fused vs reference, "
        "a short image-text retrieval run and a short easy-VQA run",
        description="Train AV-digits with each fusion, image-only and audio-only baselines, the same with "
        "corrupted images, and time the fused model's training step against its plain-PyTorch twin; then "
        "train a short image-text retrieval run on the generated scenes and rank its test gallery, and a "
        "short FiLM visual question answering run on easy-VQA.",
    )
    demo.add_argument("--out", default="runs/demo", metavar="DIR", help="output folder (default: runs/demo)")
    demo.add_argument("--quick", action="store_true", help="fewer epochs (a smoke test, lower accuracy)")
    demo.add_argument("--progress", action="store_true", help="show a progress bar per run")
    demo.set_defaults(run=_run_demo)

    bench = commands.add_parser(
        "bench",
        help="run the kernel benchmarks (needs a source checkout)",
        description="Run the kernel benchmarks of the source tree's bench/ folder with pytest-benchmark.",
    )
    bench.add_argument("--quick", action="store_true", help="only the short benchmark set")
    bench.add_argument("--report", action="store_true", help="write the report (python -m bench.report)")
    bench.add_argument("pytest_args", nargs="*", metavar="PYTEST_ARG", help="passed to pytest, after --")
    bench.set_defaults(run=_run_bench)

    info = commands.add_parser(
        "info",
        help="versions, build and which implementation each op uses",
        description="Versions of mmfast, torch and triton, how the extension was built, and "
        "mmfast.backend_info(): which implementation each op runs on CPU and CUDA.",
    )
    info.add_argument("--json", action="store_true", help="print as JSON")
    info.set_defaults(run=_run_info)
    return parser
