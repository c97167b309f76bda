"""What the benchmark scripts share: the machine's description, argument types."""

from __future__ import annotations

import argparse
import platform
from pathlib import Path


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


BENCH_PRECISIONS = ("fp32", "bf16")


def precision_list(text: str) -> list[str]:
    """argparse type of --precisions: a comma-separated list of fp32 and bf16."""
    precisions = [part.strip() for part in text.split(",") if part.strip()]
    unknown = sorted(set(precisions) - set(BENCH_PRECISIONS))
    if unknown or not precisions:
        raise argparse.ArgumentTypeError(
            f"unknown precision(s): {', '.join(unknown) or '(none given)'};"
            f" valid: {', '.join(BENCH_PRECISIONS)}"
        )
    return precisions
