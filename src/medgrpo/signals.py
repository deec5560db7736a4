"""SIGINT and SIGTERM end a job cleanly: `interrupted` in results.json, with the last step and a checkpoint.

    with stop_signals():                  # run_job: around the whole job
        ...                               # a signal outside training raises JobInterrupted at once
        callbacks=[StopAtStepEnd()]       # (medgrpo.resume) inside training: save a checkpoint and stop instead
        raise_if_stopped()                # after trainer.train(): JobInterrupted if a signal stopped it
        defer_signals()                   # while writing results.json: record a signal, exit after

SLURM sends SIGTERM at a time limit or on preemption and SIGKILL some seconds later (KillWait, 30 s by default),
so the checkpoint is the one the trainer writes at the end of the current step. A second signal does not wait.
transformers' own `enable_jit_checkpoint` is not used: it handles SIGTERM only, and saves before the optimizer
step, so a job resumed from that checkpoint would not continue the step sequence exactly.
SIGKILL cannot be caught: results.json then stays `running`, which readers show as `killed` once the pid is gone.
"""
from __future__ import annotations

import logging
import signal
from contextlib import contextmanager
from dataclasses import dataclass

log = logging.getLogger(__name__)
HANDLED = (signal.SIGINT, signal.SIGTERM)


class JobInterrupted(BaseException):
    """A stop signal ended the job (BaseException: no `except Exception` may swallow it and carry on)."""

    def __init__(self, signum: int, step: int | None, checkpoint: str | None):
        self.signum, self.step, self.checkpoint = signum, step, checkpoint
        at = f" at step {step}" if step is not None else ""
        saved = f", checkpoint {checkpoint} saved" if checkpoint else ""
        super().__init__(f"interrupted by {signal.Signals(signum).name}{at}{saved}")


@dataclass
class StopState:
    signum: int | None = None       # the signal received, once one is
    training: bool = False          # inside trainer.train(): stop at the end of the step instead of at once
    last_step: int | None = None    # the last completed optimizer step
    checkpoint: str | None = None   # the checkpoint saved since the signal
    deferred: bool = False          # the job is writing its results: record a signal, act on it afterwards
    reported: bool = False          # JobInterrupted was raised for it

    def interrupted(self) -> JobInterrupted:
        self.reported = True
        return JobInterrupted(self.signum, self.last_step, self.checkpoint)


_state: StopState | None = None  # signal handlers are per process, so is this


@contextmanager
def stop_signals():
    """Handle SIGINT/SIGTERM for the duration of one job (restoring the previous handlers after it)."""
    global _state
    state = _state = StopState()

    def handle(signum, frame):
        first = state.signum is None
        state.signum = signum
        if state.deferred:
            return
        if first and state.training:
            log.warning("%s received: stopping after this step and saving a checkpoint (send it again to stop "
                        "now)", signal.Signals(signum).name)
            return
        raise state.interrupted()

    previous = {signum: signal.signal(signum, handle) for signum in HANDLED}
    try:
        yield state
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        _state = None
    if state.signum is not None and not state.reported:  # arrived while the results were being written
        raise SystemExit(128 + state.signum)


def defer_signals() -> None:
    """From here on a stop signal is only recorded; the job's results get written, then the process exits."""
    if _state is not None:
        _state.deferred = True


def raise_if_stopped() -> None:
    """After training: a signal stopped it early, so the job ends here (no final adapter, no evaluation)."""
    if _state is not None and _state.signum is not None:
        raise _state.interrupted()


def active() -> StopState | None:
    """The running job's stop state (None outside stop_signals)."""
    return _state
