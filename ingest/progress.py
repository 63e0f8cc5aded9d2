"""Progress of long jobs, drawn with rich: rows counted with their live rate, or a list of steps.

- :class:`RowProgress`: producing and loading (count, live rate, elapsed time, a bar
  when the total is known). Drawn only when asked (the CLI asks; library callers and
  tests do not).
- :class:`Steps`: the long steps of ``smoke up`` and ``smoke down``: a live spinner
  while a step runs, then one line per step with its outcome and duration, so a slow
  step (``ray start`` takes about 11 s on two cores) never looks like a hang and the
  log of a run reads top to bottom. Steps that know their size (training) get a bar.

rich is imported only when something is drawn.

>>> with RowProgress(False, "loading") as progress:
...     progress.advance(10)
...     progress.count
10
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress, TaskID


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


def _stderr_console() -> Console:
    from rich.console import Console

    return Console(stderr=True)


class StepSkipped(Exception):  # a control-flow signal, not an error
    """Raised inside a step to mark it as not done, with the reason as message."""


@dataclass
class StepOutcome:
    description: str
    status: str = "running"  # done | skipped | failed
    detail: str = ""
    seconds: float = 0.0


@dataclass
class Steps:
    """A sequence of steps with one live progress display; use as a context manager."""

    console: Console = field(default_factory=_stderr_console)
    outcomes: list[StepOutcome] = field(default_factory=list)
    _progress: Progress | None = None

    def __enter__(self) -> Steps:
        from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        self._progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(bar_width=30),
                                  TextColumn("{task.fields[note]}"), TimeElapsedColumn(),
                                  console=self.console, transient=True)
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()

    @contextmanager
    def step(self, description: str, total: float | None = None) -> Iterator[StepHandle]:
        """Run one step; an exception fails it (and propagates), :class:`StepSkipped` skips it."""
        assert self._progress is not None, "use Steps as a context manager"
        outcome = StepOutcome(description)
        self.outcomes.append(outcome)
        task = self._progress.add_task(description, total=total, note="")
        handle = StepHandle(self._progress, task)
        started = time.monotonic()
        try:
            yield handle
        except StepSkipped as skipped:
            outcome.status, outcome.detail = "skipped", str(skipped)
        except BaseException as err:
            outcome.status, outcome.detail = "failed", str(err) or type(err).__name__
            raise
        else:
            outcome.status, outcome.detail = "done", handle.result
        finally:
            outcome.seconds = time.monotonic() - started
            self._progress.remove_task(task)
            self._print(outcome)

    def _print(self, outcome: StepOutcome) -> None:
        from rich.markup import escape

        mark = {"done": "[green]✓[/]", "skipped": "[yellow]–[/]", "failed": "[red]✗[/]"}[outcome.status]
        # Details quote other programs' messages, which may hold [brackets] that rich would read as markup.
        detail = f": {escape(outcome.detail)}" if outcome.detail else ""
        self.console.print(f"{mark} {escape(outcome.description)}{detail} [dim]({outcome.seconds:.1f} s)[/]",
                           highlight=False)


@dataclass
class StepHandle:
    """What a running step can do: say what it is doing, advance its bar, and set its result line."""

    progress: Progress
    task: TaskID
    result: str = ""

    def note(self, text: str) -> None:
        self.progress.update(self.task, note=text)

    def advance(self, amount: float = 1.0, note: str | None = None) -> None:
        self.progress.update(self.task, advance=amount, **({"note": note} if note is not None else {}))

    def skip(self, reason: str) -> None:
        raise StepSkipped(reason)
