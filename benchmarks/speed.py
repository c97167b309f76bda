"""Side-by-side CPU latency: our inference-form LIPT against the published implementation's way
of computing (benchmarks/published_lipt.py, which reproduces the reference vectors), in one
process, interleaved run by run so that their ratio holds on a noisy machine.

    python benchmarks/speed.py                      # tiny and small, x4, 320x180 LR, 2 threads
    python benchmarks/speed.py --models lipt-tiny --runs 20 --json out.json

The published side is its deploy form as the published conversion leaves it (multi-branch convs
fused, project_inp's BatchNorm not); `--fold-published` folds that too, for a stricter match.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import time
from pathlib import Path

import torch

# Run as `python benchmarks/speed.py`: this folder is on sys.path.
from published_lipt import build_published_lipt, deploy, published_config

from lipt_core import create_model, reparameterize


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="lipt-tiny,lipt-small")
    parser.add_argument("--scale", type=int, default=4)
    parser.add_argument("--size", default="320x180", help="LR input WIDTHxHEIGHT")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--fold-published", action="store_true")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    width, height = (int(v) for v in args.size.lower().split("x"))
    image = torch.rand(1, 3, height, width) * 255

    contenders = {}
    for name in args.models.split(","):
        ours = reparameterize(create_model(name, scale=args.scale).eval())
        theirs = build_published_lipt(published_config(ours.config)).eval()
        theirs = deploy(theirs, fold_project_inp=args.fold_published)
        contenders[f"{name} (ours)"] = ours
        contenders[f"{name} (published)"] = theirs

    times: dict[str, list[float]] = {label: [] for label in contenders}
    order = list(contenders)
    with torch.inference_mode():
        for _ in range(args.warmup):
            for model in contenders.values():
                model(image)
        for _ in range(args.runs):
            random.shuffle(order)
            for label in order:
                start = time.perf_counter()
                contenders[label](image)
                times[label].append((time.perf_counter() - start) * 1000)

    rows = []
    print(
        f"{cpu_name()}, {args.threads} threads, torch {torch.__version__}, x{args.scale}, "
        f"LR {width}x{height}, median of {args.runs} interleaved runs after {args.warmup} warm-up"
    )
    print(f"{'model':28} {'median ms':>10} {'p10':>8} {'p90':>8}")
    for label, samples in times.items():
        deciles = statistics.quantiles(samples, n=10)
        rows.append(
            {
                "model": label,
                "median_ms": statistics.median(samples),
                "p10_ms": deciles[0],
                "p90_ms": deciles[-1],
                "samples_ms": samples,
            }
        )
        print(f"{label:28} {rows[-1]['median_ms']:10.1f} {deciles[0]:8.1f} {deciles[-1]:8.1f}")
    for name in args.models.split(","):
        ours = statistics.median(times[f"{name} (ours)"])
        theirs = statistics.median(times[f"{name} (published)"])
        print(f"{name}: ours is {theirs / ours:.2f}x faster than the published implementation")
    if args.json:
        args.json.write_text(
            json.dumps(
                {"cpu": cpu_name(), "args": vars(args) | {"json": str(args.json)}, "rows": rows},
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
