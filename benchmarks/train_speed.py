"""Training-step speed on CPU: ours against the published implementation's way of computing.

One Adam step = forward of the training form (multi-branch HRM convolutions with BatchNorm in
train mode; `--form inference`: the plain-convolution form, as `configs/release/` trains), L1
loss, backward, Adam update. 16 patches of 48x48 LR, x4, lipt-tiny, 2 threads by
default. Data loading is EXCLUDED (the same random batch every step; `lipt train` makes batches
in DataLoader workers, overlapped with the step). The two models are timed interleaved step by
step in one process, so their ratio holds on a noisy machine; the median of the timed steps
after the warm-up ones is reported.

    python benchmarks/train_speed.py                     # ours and published, 10 steps each
    python benchmarks/train_speed.py --steps 20 --which ours --json out.json
    python benchmarks/train_speed.py --form inference
    python benchmarks/train_speed.py --form inference --which ours --precisions fp32,bf16
    python benchmarks/train_speed.py --form inference --which ours --compile --scale 1

bf16 runs the forward under CPU autocast, as `lipt train --set precision=bf16` does (it needs a
CPU with native bf16); weights, gradients and the Adam state stay fp32.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

# Run as `python benchmarks/train_speed.py`: this folder is on sys.path.
from bench_common import cpu_name, precision_list
from published_lipt import build_published_lipt, deploy, published_config

from lipt_core import create_model


def _published(ours):
    return build_published_lipt(published_config(ours.config))


def _label(name: str, precision: str, precisions: list[str]) -> str:
    # With one precision the labels stay "ours" / "published", as earlier results files have them.
    return name if len(precisions) == 1 else f"{name} {precision}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="lipt-tiny")
    parser.add_argument("--scale", type=int, default=4)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--patch", type=int, default=48, help="LR patch side")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=10, help="timed steps per model")
    parser.add_argument("--which", choices=["both", "ours", "published"], default="both")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument(
        "--form",
        choices=["training", "inference"],
        default="training",
        help="which form is trained (inference: plain convolutions, as configs/release/ do)",
    )
    parser.add_argument(
        "--precisions", type=precision_list, default="fp32", help="comma-separated: fp32, bf16"
    )
    parser.add_argument("--flush-denormal", action="store_true")
    parser.add_argument("--fused-adam", action="store_true")
    parser.add_argument(
        "--compile", action="store_true", help="also ours through torch.compile (inductor)"
    )
    args = parser.parse_args()
    precisions = args.precisions
    torch.set_flush_denormal(args.flush_denormal)

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    ours = create_model(args.model, scale=args.scale).train()
    models = {}
    if args.which in ("both", "published"):
        models["published"] = _published(ours).train()
        if args.form == "inference":
            deploy(models["published"], fold_project_inp=True)
    if args.form == "inference":
        ours = create_model(args.model, scale=args.scale, inference=True).train()
    if args.which in ("both", "ours"):
        models["ours"] = ours  # as lipt train: weights contiguous, activations channels-last
        if args.compile:
            models["ours compiled"] = torch.compile(copy.deepcopy(ours), dynamic=False)
    optimizers = {
        # ours as `lipt train` steps it (foreach Adam); the published code uses the default
        k: torch.optim.Adam(
            m.parameters(),
            lr=2e-4,
            fused=args.fused_adam or None,
            foreach=(k.startswith("ours") and not args.fused_adam) or None,
        )
        for k, m in models.items()
    }
    low = torch.rand(args.batch, 3, args.patch, args.patch) * 255
    high = torch.rand(args.batch, 3, args.patch * args.scale, args.patch * args.scale) * 255
    inputs = {
        "ours": (
            low.contiguous(memory_format=torch.channels_last),
            high.contiguous(memory_format=torch.channels_last),
        ),
        "published": (low, high),
    }
    inputs["ours compiled"] = inputs["ours"]

    def step(name: str, precision: str) -> float:
        model, optimizer = models[name], optimizers[name]
        x, y = inputs[name]
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            out = model(x)
        loss = F.l1_loss(out.float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return time.perf_counter() - start

    contenders = [(name, precision) for name in models for precision in precisions]
    times: dict[str, list[float]] = {_label(*c, precisions): [] for c in contenders}
    compile_seconds = {}
    for name, precision in contenders:
        if name == "ours compiled":  # compiling is the first step: kept out of the timed ones
            compile_seconds[precision] = step(name, precision)
    for i in range(args.warmup + args.steps):
        for name, precision in contenders:
            elapsed = step(name, precision)
            if i >= args.warmup:
                times[_label(name, precision, precisions)].append(elapsed)
    result = {
        "setup": {
            "model": args.model,
            "form": args.form,
            "scale": args.scale,
            "batch": args.batch,
            "lr_patch": args.patch,
            "threads": args.threads,
            "loss": "L1",
            "optimizer": "Adam",
            "data_loading": "excluded",
            "flush_denormal": args.flush_denormal,
            "fused_adam": args.fused_adam,
            "compile_seconds": compile_seconds,
            "precisions": precisions,
            "torch": torch.__version__,
            "cpu": cpu_name(),
        },
        "seconds_per_step": {k: statistics.median(v) for k, v in times.items()},
        "steps_per_second": {k: 1 / statistics.median(v) for k, v in times.items()},
        "all_times": times,
    }
    for name, values in times.items():
        median = statistics.median(values)
        print(
            f"{name:>14}: {median:.3f} s/step ({1 / median:.2f} steps/s), "
            f"min {min(values):.3f}, max {max(values):.3f} over {len(values)} steps"
        )
    if "ours" in models and "published" in models:
        result["speedup"] = {}
        for precision in precisions:
            ours = statistics.median(times[_label("ours", precision, precisions)])
            theirs = statistics.median(times[_label("published", precision, precisions)])
            print(f"  speedup {precision}: {theirs / ours:.2f}x")
            result["speedup"][precision] = theirs / ours
    if "ours compiled" in models:
        result["compile_speedup"] = {}
        for precision in precisions:
            eager = statistics.median(times[_label("ours", precision, precisions)])
            compiled = statistics.median(times[_label("ours compiled", precision, precisions)])
            print(
                f"  compiled {precision}: {eager / compiled:.2f}x the speed of eager"
                f" (compiling took {compile_seconds[precision]:.0f} s)"
            )
            result["compile_speedup"][precision] = eager / compiled
    if len(precisions) > 1:
        result["precision_speedup"] = {}
        for name in models:
            base = statistics.median(times[_label(name, precisions[0], precisions)])
            for precision in precisions[1:]:
                other = statistics.median(times[_label(name, precision, precisions)])
                print(f"  {name}: {precision} is {base / other:.2f}x faster than {precisions[0]}")
                result["precision_speedup"][f"{name} {precision}"] = base / other
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
