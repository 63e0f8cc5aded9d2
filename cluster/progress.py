"""Progress for the long steps of ``smoke up`` and ``smoke down``: a live spinner, then one line per step.

Each step shows what it is doing and for how long while it runs, and leaves a
line with its outcome and duration, so a slow step (``ray start`` takes about
11 s on two cores) never looks like a hang and the log of a run reads top to
bottom. Steps that know their size (training) get a bar through :meth:`Steps.bar`.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn


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

    console: Console = field(default_factory=lambda: Console(stderr=True))
    outcomes: list[StepOutcome] = field(default_factory=list)
    _progress: Progress | None = None

    def __enter__(self) -> Steps:
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
