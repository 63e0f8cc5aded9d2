"""Markdown tables of benchmark figures, for the console and for BENCHMARKS.md.

A result file may carry ``"tables": {title: {"columns": [...], "rows": [[...], ...]}}``;
the script prints them and :mod:`bench.run_all` renders them, so both show the same table.
"""

from __future__ import annotations

from collections.abc import Sequence


def format_cell(value: object) -> str:
    if isinstance(value, bool) or value is None:
        return "-" if value is None else str(value).lower()
    if isinstance(value, float):
        return f"{value:,.3g}" if abs(value) < 1000 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def markdown_table(columns: Sequence[str], rows: Sequence[Sequence[object]]) -> list[str]:
    lines = ["| " + " | ".join(columns) + " |", "| " + " | ".join("---" for _ in columns) + " |"]
    lines += ["| " + " | ".join(format_cell(v) for v in row) + " |" for row in rows]
    return lines
