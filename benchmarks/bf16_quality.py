"""What CPU bf16 mixed precision (`--precision bf16`) costs in quality: every bundled model
scored in fp32 and in bf16 with `lipt eval`'s protocols, side by side.

    python benchmarks/bf16_quality.py                    # Set5 (SR) and Set14 (denoise, JPEG)
    python benchmarks/bf16_quality.py --sets Set14,B100

Needs ../shared/data and a CPU with native bf16 (AVX512-BF16 or AMX).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from lipt_core.evaluate import EvalConfig, evaluate, load_model
from lipt_core.pretrained import registry, verified_path

DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data"


def settings(task: str, scale: int, colors: int) -> dict:
    """One representative protocol setting per task."""
    if task == "sr":
        return {"scale": scale}
    if task == "denoise":
        return {"sigma": 25.0, "gray": colors == 1}
    return {"quality": 10, "gray": True}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", default="Set5,Set14")
    args = parser.parse_args()
    print(f"{'model':22} {'set':6} {'fp32 PSNR':>10} {'bf16 PSNR':>10} {'difference':>11}")
    for entry in registry():
        path = verified_path(entry)
        models = {p: load_model(path, precision=p) for p in ("fp32", "bf16")}
        for name in args.sets.split(","):
            if entry.task != "sr" and name == "Set5":
                continue
            config = EvalConfig(
                task=entry.task,
                data=DATA / name / "HR",
                **settings(entry.task, entry.scale, entry.colors),
            )
            psnr = {p: evaluate(config, restorer=m).mean("model").psnr for p, m in models.items()}
            print(
                f"{entry.name:22} {name:6} {psnr['fp32']:10.3f} {psnr['bf16']:10.3f} "
                f"{psnr['bf16'] - psnr['fp32']:+11.3f}"
            )


if __name__ == "__main__":
    main()
