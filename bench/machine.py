"""What the machine was like when a benchmark ran: its description and its load.

Results carry both because the machines are shared and noisy: a figure means
little without the cores it had and how busy they were.
"""

from __future__ import annotations

import contextlib
import os
import platform
from pathlib import Path


def machine_description() -> str:
    cpus = os.cpu_count()
    try:
        mem_kb = int(next(line for line in Path("/proc/meminfo").read_text().splitlines()
                          if line.startswith("MemTotal")).split()[1])
        mem = f"{mem_kb / 1024 / 1024:.0f} GiB"
    except (OSError, StopIteration, ValueError):
        mem = "unknown memory"
    model = "unknown CPU"
    with contextlib.suppress(OSError, StopIteration):
        model = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                     if line.startswith("model name"))
    system = f"{platform.system()} {platform.release()}"
    return f"{cpus} cores ({model}), {mem}, {system}, Python {platform.python_version()}"


def load_average() -> list[float] | None:
    """1, 5 and 15 minute load averages (None where the OS does not report them)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None
