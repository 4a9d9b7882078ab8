"""The argument parser of every ``mmfast`` sub-command. Only argparse is imported here, so that
``--help`` and argument errors answer at once; each command imports torch when it runs."""

from __future__ import annotations

import argparse
from typing import NoReturn

FUSIONS = ("concat", "gated", "attention", "transformer")
DATASETS = ("av-digits", "synthetic")


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
    parser.add_argument("--dataset", choices=DATASETS, default="av-digits", help="default: av-digits")
    parser.add_argument("--fusion", choices=FUSIONS, default="concat", help="default: concat")
    parser.add_argument(
        "--modalities",
        type=_modalities,
        default=None,
        metavar="LIST",
        help="comma-separated subset to train on, e.g. image or image,audio (default: all of the dataset's)",
    )
    parser.add_argument("--epochs", type=_positive_int, default=10, help="maximum epochs (default: 10)")
    parser.add_argument("--batch-size", type=_positive_int, default=64, help="per process (default: 64)")
    parser.add_argument("--lr", type=float, default=3e-3, help="peak AdamW learning rate (default: 3e-3)")
    parser.add_argument("--weight-decay", type=float, default=1e-2, help="default: 1e-2")
    parser.add_argument("--warmup-ratio", type=float, default=0.1, help="warm-up fraction (default: 0.1)")
    parser.add_argument("--grad-clip", type=float, default=1.0, help="max gradient norm, 0 = off")
    parser.add_argument(
        "--patience", type=int, default=5, help="early stopping: epochs without better val accuracy (0 = off)"
    )
    parser.add_argument("--hidden", type=_positive_int, default=128, help="encoder / fusion width")
    parser.add_argument("--dropout", type=float, default=0.1, help="dropout before the head (default: 0.1)")
    parser.add_argument(
        "--modality-dropout", type=float, default=0.0, help="train-time probability of dropping a modality"
    )
    parser.add_argument("--seed", type=int, default=0, help="seeds weights, data order, split (default: 0)")
    parser.add_argument("--reference", action="store_true", help="train the plain-PyTorch twin of the model")
    parser.add_argument("--autocast", choices=("none", "bf16"), default="none", help="bfloat16 autocast")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="default: auto")
    data = parser.add_argument_group("dataset options (see mmfast.data.load_dataset)")
    data.add_argument("--image-size", type=_positive_int, help="resize images to this side")
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
        help="train a multimodal classifier",
        description="Train a multimodal classifier and write checkpoints (last.pt, best.pt), log.jsonl, "
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
        description="Metrics of a checkpoint's weights on a split of the dataset it was trained on.",
    )
    evaluate.add_argument("checkpoint", metavar="CHECKPOINT", help="a last.pt / best.pt of mmfast train")
    evaluate.add_argument("--split", choices=("train", "val", "test"), default="test", help="default: test")
    evaluate.add_argument("--device", choices=("cpu", "cuda"), default=None, help="default: the run's")
    evaluate.add_argument("--json", action="store_true", help="print the metrics as JSON")
    evaluate.set_defaults(run=_run_evaluate)

    demo = commands.add_parser(
        "demo",
        help="the AV-digits demo: fusions, single-modality baselines, corrupted images, fused vs reference",
        description="Train AV-digits with each fusion, image-only and audio-only baselines, the same with "
        "corrupted images, and time the fused model's training step against its plain-PyTorch twin.",
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
