"""StepRunner: a step of device work, run eagerly or replayed from a CUDA graph.

The one rule (setup allocates, a step only writes) makes a step capturable: everything it reads
that changes from step to step lives in device memory (the batch in the input blob, the step
counters, the learning rate table), so one recorded graph, replayed, does each step's work. A
replay is one launch from Python instead of one per array operation, which is what a small
batch on a fast GPU spends its time on.

    runner = StepRunner(backend, work, full_rows=batch_size, mode="auto")
    runner.run(n)   # work(n) eagerly, or a replay of the graph captured for full batches

`work(n)` must be device work only: no host reads, no allocation, and no Python state that
changes per step (a replay runs no Python). The first full batch runs eagerly (kernels compile,
cuBLAS gets its handle), the second is captured and replayed, and every later one is replayed;
a batch of other size (an epoch's last) runs eagerly. With mode "auto" a step that cannot be
captured runs eagerly from then on, and `fallback` says why; with "on" that is an error.
"""

from __future__ import annotations

from .backends import GraphsUnsupported
from .errors import UserError
from .settings import CUDA_GRAPH_MODES


def graphs_enabled(backend, mode: str) -> bool:
    """Whether steps on `backend` are captured under `mode` (auto: where the backend can)."""
    if mode not in CUDA_GRAPH_MODES:
        raise UserError(f"unknown `cuda_graph` mode {mode!r}; use one of: auto, on, off")
    if mode == "on" and not backend.supports_graphs:
        raise UserError(
            f"`cuda_graph` on needs a CUDA device, not {backend.device}; use auto or off"
        )
    return mode != "off" and backend.supports_graphs


class StepRunner:
    def __init__(self, backend, work, full_rows: int, mode: str = "auto", log=None):
        self.backend, self.work, self.full_rows = backend, work, int(full_rows)
        self.mode, self.log = mode, log
        self.enabled = graphs_enabled(backend, mode)
        self.graph = None
        self.warmed_up = False
        self.fallback = None  # why capture was given up (mode auto), or None
        self.replays = 0

    def run(self, n: int) -> None:
        if not self.enabled or n != self.full_rows:
            self.work(n)
        elif self.graph is not None:
            self.graph.replay()
            self.replays += 1
        elif not self.warmed_up:
            self.work(n)
            self.warmed_up = True
        else:
            self._capture_and_replay(n)

    def _capture_and_replay(self, n: int) -> None:
        try:
            self.graph = self.backend.capture(lambda: self.work(n))
        except GraphsUnsupported as exc:
            if self.mode == "on":
                raise UserError(f"`cuda_graph` on, but {exc}") from None
            self.enabled, self.fallback = False, str(exc)
            if self.log:
                self.log(f"cuda graph: off, the step runs eagerly ({exc})")
            self.work(n)
            return
        self.graph.replay()
        self.replays += 1
