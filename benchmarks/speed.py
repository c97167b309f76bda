"""Side-by-side CPU latency: our inference-form LIPT against the published implementation's way
of computing (benchmarks/published_lipt.py, which reproduces the reference vectors), in one
process, interleaved run by run so that their ratio holds on a noisy machine.

    python benchmarks/speed.py                      # tiny and small, x4, 320x180 LR, 2 threads
    python benchmarks/speed.py --models lipt-tiny --runs 20 --json out.json
    python benchmarks/speed.py --precisions fp32,bf16   # also bf16 mixed precision, both sides
    python benchmarks/speed.py --models lipt-tiny --compile   # also ours through torch.compile

bf16 runs under CPU autocast, as `lipt sr --precision bf16` does (it needs a CPU with native bf16).

The published side is its deploy form as the published conversion leaves it (multi-branch convs
fused, project_inp's BatchNorm not); `--fold-published` folds that too, for a stricter match.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import torch

# Run as `python benchmarks/speed.py`: this folder is on sys.path.
from bench_common import cpu_name, precision_list
from published_lipt import build_published_lipt, deploy, published_config

from lipt_core import create_model, reparameterize
from lipt_core.bench import LatencyStats, parse_size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="lipt-tiny,lipt-small")
    parser.add_argument("--scale", type=int, default=4)
    parser.add_argument("--size", default="320x180", help="LR input WIDTHxHEIGHT")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--fold-published", action="store_true")
    parser.add_argument(
        "--precisions", type=precision_list, default="fp32", help="comma-separated: fp32, bf16"
    )
    parser.add_argument(
        "--compile", action="store_true", help="also ours through torch.compile (inductor)"
    )
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    width, height = parse_size(args.size)
    image = torch.rand(1, 3, height, width) * 255

    precisions = args.precisions
    contenders = {}
    labels = []
    for name in args.models.split(","):
        ours = reparameterize(create_model(name, scale=args.scale).eval())
        theirs = build_published_lipt(published_config(ours.config)).eval()
        theirs = deploy(theirs, fold_project_inp=args.fold_published)
        for precision in precisions:
            for side, model in (("ours", ours), ("published", theirs)):
                contenders[f"{name} {precision} ({side})"] = (model, precision)
            if args.compile:
                contenders[f"{name} {precision} (ours, compiled)"] = (
                    torch.compile(ours, dynamic=False),
                    precision,
                )
        labels.append(name)

    def run(label: str) -> None:
        model, precision = contenders[label]
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            model(image)

    compile_seconds = {}
    with torch.inference_mode():
        for label in contenders:
            if label.endswith("compiled)"):  # compiling is the first call: kept out of the runs
                start = time.perf_counter()
                run(label)
                compile_seconds[label] = time.perf_counter() - start

    times: dict[str, list[float]] = {label: [] for label in contenders}
    order = list(contenders)
    with torch.inference_mode():
        for _ in range(args.warmup):
            for label in contenders:
                run(label)
        for _ in range(args.runs):
            random.shuffle(order)
            for label in order:
                start = time.perf_counter()
                run(label)
                times[label].append((time.perf_counter() - start) * 1000)

    rows = []
    print(
        f"{cpu_name()}, {args.threads} threads, torch {torch.__version__}, x{args.scale}, "
        f"LR {width}x{height}, median of {args.runs} interleaved runs after {args.warmup} warm-up"
    )
    print(f"{'model':43} {'median ms':>10} {'p10':>8} {'p90':>8}")
    stats = {label: LatencyStats.of(samples) for label, samples in times.items()}
    for label, latency in stats.items():
        rows.append(
            {
                "model": label,
                "median_ms": latency.median,
                "p10_ms": latency.p10,
                "p90_ms": latency.p90,
                "samples_ms": list(latency.samples),
            }
        )
        print(f"{label:43} {latency.median:10.1f} {latency.p10:8.1f} {latency.p90:8.1f}")
    fp32 = "fp32" if "fp32" in precisions else precisions[0]
    for name in labels:
        reference = stats[f"{name} {fp32} (published)"].median
        for precision in precisions:
            ours = stats[f"{name} {precision} (ours)"].median
            theirs = stats[f"{name} {precision} (published)"].median
            line = f"{name} {precision}: ours is {theirs / ours:.2f}x faster than published"
            line += f" {precision}"
            if precision != fp32:
                line += f", {reference / ours:.2f}x faster than published {fp32}"
            print(line)
            compiled = f"{name} {precision} (ours, compiled)"
            if compiled in stats:
                print(
                    f"{name} {precision}: compiled is {ours / stats[compiled].median:.2f}x the"
                    f" speed of eager (compiling took {compile_seconds[compiled]:.0f} s)"
                )
    if args.json:
        args.json.write_text(
            json.dumps(
                {"cpu": cpu_name(), "args": vars(args) | {"json": str(args.json)}, "rows": rows},
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
