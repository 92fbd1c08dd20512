"""A background thread that repeats one step until halted: how the uploads while recording follow the disk."""

from __future__ import annotations

import threading
from collections.abc import Callable


class Poller:
    """Runs `step` every `interval` seconds on a daemon thread; a step that raises ends the polling and the
    exception is kept in `error` for the owner to judge. `interval` is read before every wait, so an owner
    may change it while the thread runs."""

    def __init__(self, step: Callable[[], None], interval: float, name: str) -> None:
        self._step = step
        self.interval = interval
        self._name = name
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
            self._thread.start()

    def halt(self) -> None:
        """Stop and wait for a step in progress to end."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _run(self) -> None:
        try:
            while not self._stop.wait(self.interval):
                self._step()
        except Exception as exc:
            self.error = exc
