"""Turn this project's training runs into the weights that ship in `lipt_core/pretrained/`.

For each release below: fold the run's `last.pt` (the EMA weights; never a checkpoint picked by
its validation score) into the inference form, write it as safetensors with its metadata, score
it with `lipt eval`'s protocols on Set5/Set14/B100, and record file, SHA-256, size and scores in
`lipt_core/pretrained/registry.json`. The full scores (SSIM, the baselines) go to
`benchmarks/results/pretrained_eval.json`, and `--markdown` prints the README's model card.

    python tools/release_weights.py                      # every release: export + eval
    python tools/release_weights.py --only lipt-tiny-sr-x4 --no-eval
    python tools/release_weights.py --markdown           # the model card from the saved scores
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "data"
RESULTS = ROOT / "benchmarks" / "results" / "pretrained_eval.json"
SR_SETS = ("Set5", "Set14", "B100")
RESTORE_SETS = ("Set14", "B100")
SIGMAS = (15, 25, 50)
QUALITIES = (10, 20, 30, 40)


@dataclass(frozen=True)
class Stage:
    """Steps trained with other batch settings than the checkpoint's own, which names only
    those of its last run (from the run's log and the `===` lines in it)."""

    until: int  # the stage ends at this step
    batch_size: int
    patch_size: int


@dataclass(frozen=True)
class Release:
    name: str
    run: str  # training-runs/<run>: last.pt and config.toml
    earlier: tuple[Stage, ...] = ()  # the stages before the last run's batch settings

    @property
    def file(self) -> str:
        """The shipped file's name in `lipt_core/pretrained/`."""
        return f"{self.name}.safetensors"


RELEASES = (
    Release("lipt-tiny-sr-x2", "sr_x2", (Stage(2400, 16, 48), Stage(31000, 9, 64))),
    Release("lipt-tiny-sr-x3", "sr_x3", (Stage(2100, 16, 48),)),
    Release("lipt-tiny-sr-x4", "sr_x4", (Stage(11000, 16, 48),)),
    Release("lipt-tiny-denoise", "denoise", (Stage(23000, 16, 48),)),
    Release("lipt-tiny-car", "car", (Stage(10000, 16, 48),)),
    Release("lipt-tiny-car-gray", "car_gray", (Stage(19393, 16, 48),)),
)


def _atomic_json(path: Path, value: object) -> None:
    from lipt_core.files import write_bytes

    path.parent.mkdir(parents=True, exist_ok=True)
    write_bytes(path, (json.dumps(value, indent=2) + "\n").encode("utf-8"))


def _read_json(path: Path, default: object) -> object:
    return json.loads(path.read_text()) if path.exists() else default


def export(release: Release, path: Path) -> dict:
    """Fold the release's `last.pt` into safetensors at `path`; the registry entry of the
    shipped file (`release.file`), without scores."""
    from lipt_core.checkpoint import load_checkpoint, read_tensors, save_model
    from lipt_core.reparam import reparameterize
    from lipt_core.weights import sha256_of

    source = ROOT / "training-runs" / release.run / "last.pt"
    model, _ = load_checkpoint(source)
    contents, _ = read_tensors(source)
    train = json.loads(contents["train_config"])
    task, steps = contents["task"], int(contents["step"])
    model = reparameterize(model)
    condition, extra = "", {}
    if task == "denoise":
        low, high = train["sigma_range"]
        condition, extra = f"sigma {low:g}-{high:g}", {"sigma": f"{low:g}-{high:g}"}
    elif task == "car":
        low, high = train["quality_range"]
        condition, extra = f"quality {low}-{high}", {"quality": f"{low}-{high}"}
    photos = sorted({Path(d).name for d in train["train_dirs"]})
    training = (
        f"{_steps_text(release.earlier, steps, train)} (network input), {train['form']} form, "
        "on CPU; "
        f"data: shared/data/train ({', '.join(photos)}); "
        f"config: configs/release/{release.run}.toml"
        + (f"; warm start: {Path(train['init_from']).parent.name}" if train["init_from"] else "")
    )
    save_model(
        model,
        path,
        task=task,
        name=release.name,
        steps=str(steps),
        training_data=", ".join(f"shared/data/train/{p}" for p in photos),
        training=training,
        **extra,
    )
    config = model.config
    return {
        "name": release.name,
        "task": task,
        "model": train["model"],
        "scale": config.scale,
        "colors": config.colors,
        "file": release.file,
        "sha256": sha256_of(path),
        "size": path.stat().st_size,
        "condition": condition,
        "training": training,
        "quality": {},
    }


def _mean_psnr(report, method: str) -> float:
    return round(report.mean(method).psnr, 3)


def _steps_text(earlier: tuple[Stage, ...], steps: int, train: dict) -> str:
    """'N Adam steps of B patches of PxP px', a clause per stage, the last run's settings last."""
    stages = [*earlier, Stage(steps, train["batch_size"], train["patch_size"])]
    clauses, start = [], 0
    for stage in stages:
        if stage.until <= start:
            raise SystemExit(f"stages must end at increasing steps, the last at {steps}: {stages}")
        clauses.append(
            f"{stage.until - start} {'more' if clauses else 'Adam steps'} of {stage.batch_size} "
            f"patches of {stage.patch_size}x{stage.patch_size} px"
        )
        start = stage.until
    return ", then ".join(clauses)


def _tensors(path: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(path) if path.exists() else {}


def _same_tensors(old: dict, new: dict) -> bool:
    """Whether a re-export holds exactly the tensors it replaced (so their scores still hold)."""
    import torch

    return bool(old) and old.keys() == new.keys() and all(torch.equal(old[k], new[k]) for k in old)


def evaluate_release(entry: dict, path: Path) -> tuple[dict[str, float], list[dict]]:
    """Scores of the weights at `path` under the published protocols: (registry's PSNR summary,
    full rows)."""
    from lipt_core.evaluate import EvalConfig, evaluate, load_model

    model = load_model(path, model=entry["model"])
    summary, rows = {}, []

    def run(label: str, data: str, *, summarize: bool = True, **settings) -> None:
        config = EvalConfig(task=entry["task"], data=SHARED / data / "HR", **settings)
        report = evaluate(config, restorer=model)
        model_scores, base = report.mean("model"), report.mean("baseline")
        if summarize:
            summary[label] = _mean_psnr(report, "model")
        rows.append(
            {
                "set": data,
                "label": label,
                **{k: v for k, v in settings.items() if k != "gray"},
                "colour": "Y" if settings.get("gray") else "RGB",
                "psnr": round(model_scores.psnr, 3),
                "ssim": round(model_scores.ssim, 4),
                "psnr_b": None if model_scores.psnr_b is None else round(model_scores.psnr_b, 3),
                "baseline_psnr": round(base.psnr, 3),
                "baseline_ssim": round(base.ssim, 4),
            }
        )

    if entry["task"] == "sr":
        for data in SR_SETS:
            run(f"{data} x{entry['scale']} PSNR-Y", data, scale=entry["scale"])
    elif entry["task"] == "denoise":
        for data in RESTORE_SETS:
            for sigma in SIGMAS:
                run(f"{data} sigma {sigma} PSNR", data, sigma=float(sigma), gray=False)
    else:
        # Every JPEG model is scored on gray JPEG (the usual tables); a colour one also on colour
        # 4:2:0 JPEG, what it is for, and the registry's summary keeps the scores of its own kind.
        colour = entry["colors"] == 3
        for data in RESTORE_SETS:
            for quality in QUALITIES:
                label = f"{data} q{quality} PSNR"
                run(f"{label}-Y", data, summarize=not colour, quality=quality, gray=True)
                if colour:
                    run(f"{label} RGB", data, quality=quality, gray=False)
    return summary, rows


PUBLISHED_SR = {  # LIPT-Tiny, Set5 / Set14 / B100 PSNR-Y (Qiao et al., Table of the paper)
    2: (38.03, 33.61, 32.20),
    3: (34.38, 30.32, 29.12),
    4: (32.19, 28.60, 27.59),
}


def _cell(row: dict) -> str:
    return f"{row['psnr']:.2f} / {row['ssim']:.4f}"


def _gain(row: dict) -> str:
    return f"{row['psnr'] - row['baseline_psnr']:+.2f}"


def markdown(results: dict) -> str:
    """The README's model card tables from the saved scores."""
    out = ["Super-resolution, PSNR-Y (dB) / SSIM-Y:", ""]
    out += ["| | Set5 | Set14 | B100 |", "|---|---|---|---|"]
    for scale in (2, 3, 4):
        rows = {r["set"]: r for r in results.get(f"lipt-tiny-sr-x{scale}", [])}
        if not rows:
            continue
        out.append(
            f"| **x{scale} lipt-tiny (bundled)** | "
            + " | ".join(f"**{_cell(rows[name])}**" for name in SR_SETS)
            + " |"
        )
        out.append(
            f"| x{scale} LIPT-Tiny, published | "
            + " | ".join(f"{v:.2f}" for v in PUBLISHED_SR[scale])
            + " |"
        )
        out.append(
            f"| x{scale} bicubic | "
            + " | ".join(
                f"{rows[name]['baseline_psnr']:.2f} / {rows[name]['baseline_ssim']:.4f}"
                for name in SR_SETS
            )
            + " |"
        )
    denoise = results.get("lipt-tiny-denoise", [])
    if denoise:
        out += ["", "Blind colour denoising (one model for sigma 0-50), RGB PSNR (dB) / SSIM:", ""]
        out += [
            "| set | sigma | noisy input | lipt-tiny (bundled) | gain |",
            "|---|---|---|---|---|",
        ]
        for row in denoise:
            out.append(
                f"| {row['set']} | {row['sigma']:g} | {row['baseline_psnr']:.2f} | "
                f"**{_cell(row)}** | {_gain(row)} |"
            )
    car_colour = [r for r in results.get("lipt-tiny-car", []) if r["colour"] == "RGB"]
    if car_colour:
        out += [
            "",
            "Blind JPEG artifact removal on colour JPEG (Pillow, 4:2:0 chroma), RGB PSNR (dB) / "
            "SSIM, and PSNR-B:",
            "",
            "| set | quality | JPEG input | lipt-tiny-car (bundled) | PSNR-B | gain |",
            "|---|---|---|---|---|---|",
        ]
        for row in car_colour:
            out.append(
                f"| {row['set']} | {row['quality']} | {row['baseline_psnr']:.2f} | "
                f"**{_cell(row)}** | {row['psnr_b']:.2f} | "
                f"{_gain(row)} |"
            )
    car = [r for r in results.get("lipt-tiny-car", []) if r["colour"] == "Y"]
    car_gray = {(r["set"], r["quality"]): r for r in results.get("lipt-tiny-car-gray", [])}
    if car:
        out += [
            "",
            "Blind JPEG artifact removal (one model for quality 10-90) on gray JPEG (the Y of each "
            "image), PSNR (dB) / SSIM, and PSNR-B; the colour model gets the gray image as three "
            "equal channels:",
            "",
        ]
        header = "| set | quality | JPEG input | lipt-tiny-car (RGB) |"
        rule = "|---|---|---|---|"
        if car_gray:
            header += " lipt-tiny-car-gray | PSNR-B (gray) |"
            rule += "---|---|"
        out += [header + " gain |", rule + "---|"]
        for row in car:
            line = (
                f"| {row['set']} | {row['quality']} | {row['baseline_psnr']:.2f} | {_cell(row)} |"
            )
            best = row
            gray = car_gray.get((row["set"], row["quality"]))
            if car_gray:
                line += f" **{_cell(gray)}** | {gray['psnr_b']:.2f} |"
                best = gray
            out.append(line + f" {_gain(best)} |")
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", action="append", help="release name (repeatable)")
    parser.add_argument("--no-eval", action="store_true", help="export only")
    parser.add_argument("--markdown", action="store_true", help="print the model card")
    args = parser.parse_args()
    from lipt_core.pretrained import FOLDER, REGISTRY_FILE, registry

    results = _read_json(RESULTS, {})
    if args.markdown:
        sys.stdout.write(markdown(results) + "\n")
        return
    releases = [r for r in RELEASES if not args.only or r.name in args.only]
    for release in releases:
        shipped = FOLDER / release.file
        # The new weights replace the shipped ones only once scored: a release stopped or failing
        # midway leaves the shipped file matching its registry entry (a SHA-256 checked on load).
        staged = shipped.with_name(f".{shipped.name}.staged")
        try:
            entry = export(release, staged)
            if not args.no_eval:
                entry["quality"], results[release.name] = evaluate_release(entry, staged)
            # Re-read: several releases may be evaluated by parallel processes.
            entries = {e["name"]: e for e in _read_json(REGISTRY_FILE, [])}
            # Scores carry over only to the very same weights (new metadata alone is fine).
            if (
                args.no_eval
                and release.name in entries
                and _same_tensors(_tensors(shipped), _tensors(staged))
            ):
                entry["quality"] = entries[release.name]["quality"]
            os.replace(staged, shipped)
        finally:
            staged.unlink(missing_ok=True)
        entries[release.name] = entry
        order = [r.name for r in RELEASES]
        _atomic_json(REGISTRY_FILE, sorted(entries.values(), key=lambda e: order.index(e["name"])))
        if not args.no_eval:
            saved = _read_json(RESULTS, {})
            saved[release.name] = results[release.name]
            _atomic_json(RESULTS, saved)
        registry.cache_clear()
        print(f"{release.name}: {entry['sha256'][:16]} {entry['size']} bytes {entry['quality']}")


if __name__ == "__main__":
    main()
