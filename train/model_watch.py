"""Hot model reload: follow one registry reference and load the version it names when that changes.

The stream workers follow the ``production`` alias; each Serve replica follows one
reference per A/B variant (the alias, or a pinned version). Reading the alias is
one small file read, so polling every few seconds is cheap; a model is loaded only
when the reference names another version, completely, before it replaces the one
in use, so a caller never sees a half-loaded model. A version that cannot be
loaded (or that ``accept`` refuses) leaves the current model in place and is
logged once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

from train.registry import PRODUCTION, LoadedModel, ModelRegistry, RegistryError

log = logging.getLogger(__name__)


class ModelWatch:
    """One reference of a registry, and the model it currently names.

    ``accept(model)`` may raise to refuse a version this caller cannot use (Serve
    refuses models that need windowed features). ``poll_s`` paces :meth:`poll`.
    """

    def __init__(self, registry: ModelRegistry | str | Path, name: str | None = None, ref: str = PRODUCTION, *,
                 poll_s: float = 0.0, accept: Callable[[LoadedModel], None] | None = None) -> None:
        self.registry = registry if isinstance(registry, ModelRegistry) else ModelRegistry(registry, name or "")
        self.ref = ref
        self.poll_s = poll_s
        self.accept = accept
        self.model: LoadedModel | None = None
        self.error: str | None = None  # why the reference cannot be followed now (None: it is)
        self._next_poll = 0.0

    @property
    def version(self) -> str | None:
        return self.model.version if self.model is not None else None

    def poll(self, now: float | None = None) -> bool:
        """:meth:`refresh`, at most every ``poll_s`` seconds (monotonic clock); False between polls."""
        now = time.monotonic() if now is None else now
        if now < self._next_poll:
            return False
        self._next_poll = now + self.poll_s
        return self.refresh()

    def refresh(self) -> bool:
        """Load the version the reference names if it is not the one in use; True when the model changed.

        Blocking (file reads and model parsing): call it from a thread, not an event loop.
        """
        try:
            version = self.registry.resolve(self.ref)
        except (OSError, RegistryError) as err:
            self._failed(f"cannot resolve {self.ref!r} in {self.registry!r}: {err}")
            return False
        if version == self.version:
            self.error = None
            return False
        try:
            model = self.registry.load(version)
            if self.accept is not None:
                self.accept(model)
        except Exception as err:  # a broken version must not take down the one in use
            self._failed(f"cannot use {self.registry.name}:{version}: {type(err).__name__}: {err}; keeping "
                         f"{self.version or 'no model'}")
            return False
        log.info("model %s (%s): now %s (was %s)", self.registry.name, self.ref, version, self.version or "none")
        self.model, self.error = model, None
        return True

    def _failed(self, message: str) -> None:
        if message != self.error:  # once per distinct cause, not at every poll
            log.warning("%s", message)
        self.error = message
