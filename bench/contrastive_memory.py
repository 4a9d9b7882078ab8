"""Peak resident memory of one contrastive-loss step, measured in a fresh process:

    python -m bench.contrastive_memory --loss clip --impl mmfast --batch 16384 --dim 256 \\
        --dtype float32 --mode forward+backward

prints one JSON line: the peak resident set size (Linux VmHWM, reset with /proc/self/clear_refs
just before the step) minus the resident size before it, that is what the loss needs beyond its
inputs (and, for forward+backward, beyond the gradients it writes: they are allocated before the
reset, as an optimizer step would find them). On a CPU there is no allocator statistic to read:
resident memory is what counts, and a process of its own keeps earlier cases' pages out.
"""

from __future__ import annotations

import argparse
import json
import sys

import torch
import torch.nn.functional as F


def _status_kib(field: str) -> int:
    with open("/proc/self/status", encoding="utf-8") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def eager_clip(image, text, scale, bias=None):
    """open_clip's ClipLoss on one process (in float32 for bfloat16 features, as autocast does)."""
    logits = scale * image.float() @ text.float().T
    labels = torch.arange(image.shape[0])
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2


def eager_siglip(image, text, scale, bias):
    """open_clip's SigLipLoss on one process."""
    logits = scale * image.float() @ text.float().T + bias
    labels = 2 * torch.eye(image.shape[0]) - 1
    return -F.logsigmoid(labels * logits).sum() / image.shape[0]


def loss_function(loss: str, impl: str):
    from mmfast.ops import clip_loss, siglip_loss

    eager = eager_clip if loss == "clip" else eager_siglip
    fused = clip_loss if loss == "clip" else siglip_loss
    if impl == "mmfast":
        return fused
    if impl == "compile":
        return torch.compile(eager)
    return eager


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--loss", choices=("clip", "siglip"), required=True)
    parser.add_argument("--impl", choices=("mmfast", "eager", "compile"), required=True)
    parser.add_argument("--batch", type=int, required=True)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    parser.add_argument("--mode", choices=("forward", "forward+backward"), default="forward+backward")
    args = parser.parse_args(argv)
    dtype = getattr(torch, args.dtype)
    backward = args.mode == "forward+backward"
    generator = torch.Generator().manual_seed(0)
    image = F.normalize(torch.randn(args.batch, args.dim, generator=generator), dim=-1).to(dtype)
    text = F.normalize(torch.randn(args.batch, args.dim, generator=generator), dim=-1).to(dtype)
    image.requires_grad_(backward)
    text.requires_grad_(backward)
    scale = torch.tensor(14.0, requires_grad=backward)
    bias = torch.tensor(-10.0, requires_grad=backward)
    if backward:  # the gradients exist before the step, as they do in training after the first one
        image.grad, text.grad = torch.zeros_like(image), torch.zeros_like(text)
    fn = loss_function(args.loss, args.impl)
    if args.impl == "compile":  # compile (and its memory) before the measured step
        small = [t[:8].detach().requires_grad_(backward) for t in (image, text)]
        fn(*small, scale, bias)
    with open("/proc/self/clear_refs", "w", encoding="utf-8") as refs:
        refs.write("5")  # resets VmHWM to the current resident size
    before = _status_kib("VmRSS")
    loss = fn(image, text, scale, bias)
    if backward:
        loss.backward()
    peak = _status_kib("VmHWM")
    print(json.dumps({"peak_mib": (peak - before) / 1024, "loss": float(loss.detach())}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
