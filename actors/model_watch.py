"""Hot model reload: poll the registry's ``production`` alias and load a new version when it changes.

Reading the alias is one small file read, so polling every few seconds is cheap;
the model itself is loaded only when the alias names a different version.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from train.registry import ModelRegistry, RegistryError

log = logging.getLogger(__name__)


class ModelWatch:
    def __init__(self, registry_dir: str, name: str, poll_s: float) -> None:
        self.registry = ModelRegistry(registry_dir, name)
        self.poll_s = poll_s
        self.version: str | None = None
        self.model: Any | None = None
        self._next_poll = 0.0
        self._warned: str | None = None

    def poll(self, now: float | None = None) -> bool:
        """True when the production model changed (``self.model`` is then the new one, or None)."""
        now = time.monotonic() if now is None else now
        if now < self._next_poll:
            return False
        self._next_poll = now + self.poll_s
        try:
            version = self.registry.production_version()
        except (OSError, RegistryError) as err:
            self._warn_once(f"cannot read the production alias of {self.registry!r}: {err}")
            return False
        if version == self.version:
            return False
        if version is None:
            log.warning("model %s: no production version any more; detecting without a model", self.version)
            self.version, self.model = None, None
            return True
        try:
            model = self.registry.load(version)
        except Exception as err:  # a broken version must not stop detection
            self._warn_once(f"cannot load model {version}: {err}; keeping {self.version or 'no model'}")
            return False
        log.info("model: now using %s (was %s)", version, self.version or "no model")
        self.version, self.model = version, model
        self._warned = None
        return True

    def _warn_once(self, message: str) -> None:
        if message != self._warned:
            log.warning("%s", message)
            self._warned = message
