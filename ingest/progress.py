"""A rich progress line for long ingest jobs (producing, loading): count, live rate, elapsed time.

Drawn only when asked (the CLI asks; library callers and tests do not), and rich
is imported only then.

>>> with RowProgress(False, "loading") as progress:
...     progress.advance(10)
...     progress.count
10
"""

from __future__ import annotations


class RowProgress:
    """Counts rows; with ``show`` it also draws them, with a bar when the ``total`` is known."""

    def __init__(self, show: bool, description: str, total: int | None = None) -> None:
        self.count = 0
        self._progress = None
        if show:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                ProgressColumn,
                TextColumn,
                TimeElapsedColumn,
            )
            from rich.text import Text

            class RateColumn(ProgressColumn):
                def render(self, task) -> Text:
                    return Text("--- /s" if task.speed is None else f"{task.speed:,.0f}/s", style="cyan")

            self._progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                      RateColumn(), TimeElapsedColumn())
            self._task = self._progress.add_task(description, total=total)

    def __enter__(self) -> RowProgress:
        if self._progress is not None:
            self._progress.start()
        return self

    def advance(self, rows: int) -> None:
        self.count += rows
        if self._progress is not None:
            self._progress.update(self._task, completed=self.count)

    def __exit__(self, *exc) -> None:
        if self._progress is not None:
            # The total was an estimate (dropouts, a stop): end the bar at what was done.
            self._progress.update(self._task, total=self.count, completed=self.count)
            self._progress.stop()
