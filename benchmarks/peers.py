"""What every benchmark prints about where it ran, and how it sets our figures beside a peer's.

A peer figure is one of two kinds, and the output says which:

- measured: the peer is installed (the ``[bench]`` extra) and runs in the same
  process tree as ours, interleaved with it (ours, peer, ours, peer, ...), so
  both see the same load on the shared machine; the median of ``--repeats``
  rounds is compared (`interleave`, `median`, `times`);
- quoted: a figure a peer publishes that cannot be reproduced here (an unnamed
  commercial platform, say). It is printed with its source (`Quoted`) and no
  ratio is ever computed from it: a ratio of our time on this machine to a
  number from another machine on another day measures nothing.

Every script calls `print_header` first, so each output starts with the date,
the machine (cores, CPU model, RAM, load) and the list of quoted figures.
"""

from __future__ import annotations

import os
import platform
import statistics
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from importlib import metadata
from pathlib import Path
from typing import TypeVar

R = TypeVar("R")


@dataclass(frozen=True)
class Quoted:
    """A peer's published figure that this script cannot measure: shown with its source, never divided by."""

    what: str
    figure: str
    source: str

    def __str__(self) -> str:
        return f"{self.what}: {self.figure} (quoted, not measured; source: {self.source})"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _ram_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 1024**2
    except OSError:
        pass
    return None


def machine() -> str:
    """One line: cores, CPU model, RAM, load average and Python, as this process sees them."""
    ram = _ram_gib()
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    return (f"{os.cpu_count()} cores ({_cpu_model()}), {f'{ram:.1f} GiB RAM' if ram else 'RAM unknown'}, "
            f"load average {load}, Python {platform.python_version()} on {platform.system()} {platform.machine()}")


def version(package: str) -> str:
    """``"sdv 2.0.0"``, or ``"sdv (not installed)"``, for the header's list of measured peers."""
    try:
        return f"{package} {metadata.version(package)}"
    except metadata.PackageNotFoundError:
        return f"{package} (not installed)"


def print_header(title: str, *, measured: Sequence[str] = (), quoted: Sequence[Quoted] = ()) -> None:
    """Print the title, the date, the machine, the peers measured in this run and the figures only quoted."""
    print(title)
    print(f"date: {datetime.now().astimezone().isoformat(timespec='seconds')}")
    print(f"machine: {machine()}")
    print(f"peers measured in this run: {'; '.join(measured) if measured else 'none'}")
    if quoted:
        print("quoted, not measured (no ratio is computed from these):")
        for figure in quoted:
            print(f"  - {figure}")
    else:
        print("quoted figures: none")
    print(flush=True)


def interleave(cases: Mapping[str, Callable[[int], R]], repeats: int) -> dict[str, list[R]]:
    """Run every case once per round, in the mapping's order, for `repeats` rounds; each case's results in order.

    Each case is called with the round's index (0-based), so it can vary a seed.
    Rounds rather than blocks of runs: a burst of load from another process
    then falls on ours and the peer's alike.
    """
    results: dict[str, list[R]] = {name: [] for name in cases}
    for round_ in range(max(1, repeats)):
        for name, case in cases.items():
            print(f"  round {round_ + 1}/{max(1, repeats)}: {name} ...", file=sys.stderr, flush=True)
            results[name].append(case(round_))
    return results


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def spread(values: Sequence[float], spec: str = ".2f") -> str:
    """The runs, for the eye: ``"2.10, 2.31, 2.05"``."""
    return ", ".join(format(v, spec) for v in values)


def times(peer: float, ours: float) -> str:
    """How many times the peer's median our median is: ``"18.4x"`` (above 1: ours is faster or smaller)."""
    return f"{peer / ours:.1f}x" if ours > 0 else "-"
