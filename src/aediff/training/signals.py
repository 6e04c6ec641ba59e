"""Ctrl-C and SIGTERM during training: the first one finishes the step, saves a checkpoint and returns; a
second one aborts at once, or, while a checkpoint is being written, as soon as that write is done (the journaled
writes keep the last checkpoint intact either way)."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


class TrainingAborted(KeyboardInterrupt):
    """A second Ctrl-C (or SIGTERM) while the first one's checkpoint was pending: training stops at once.

    A KeyboardInterrupt, so that code which handles Ctrl-C handles it; ``exit_code`` is 128 + the signal
    number (130 for SIGINT, 143 for SIGTERM) and ``str()`` is the line to show."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.exit_code = 128 + signum


@dataclass
class StopRequests:
    """What the signals (and ``Trainer.request_stop``) have asked of the training loop so far."""

    say: Callable[[str], None]  # one line for the user (beside the progress bar)
    requested: bool = False  # finish the current step, save a checkpoint and return
    stop_signal: int | None = None  # the signal that asked for it (None: none, or request_stop())
    writing: bool = False  # a checkpoint write is under way: a second signal waits for its end
    abort_signal: int | None = None  # the second signal, which came during that write

    def install(self, abort: Callable[[int], None]) -> dict[int, Any]:
        """Handle SIGINT and SIGTERM (main thread only); ``abort(signum)`` raises ``TrainingAborted``. Returns
        the handlers to put back with ``restore``."""
        if threading.current_thread() is not threading.main_thread():
            return {}

        def handler(signum: int, frame: Any) -> None:
            if not self.requested:
                self.requested, self.stop_signal = True, signum
                again = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
                self.say(f"Stopping after this step and saving a checkpoint ({again} again to abort).")
            elif self.writing and self.abort_signal is None:  # a few moments more: the message stays exact
                self.abort_signal = signum
                self.say("Aborting once this checkpoint is written (again to abort now).")
            else:
                abort(signum)

        return {signum: signal.signal(signum, handler) for signum in (signal.SIGINT, signal.SIGTERM)}


def restore(previous: dict[int, Any]) -> None:
    """Put back the handlers ``StopRequests.install`` replaced."""
    for signum, handler in previous.items():
        signal.signal(signum, handler)
