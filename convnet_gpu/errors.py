"""The errors a user can cause and fix: each message is one line that says what and how.

The CLI turns every UserError into that line on stderr and exit status 2; anything else is a
bug and keeps its traceback. Library messages name settings and values, never CLI flags: a
setting or option is written as its Python name in backticks (`lr`, `data_dir`, `device`), which
the CLI shows as its flag (--lr, --data-dir, --device).
"""

from __future__ import annotations


class UserError(ValueError):
    """Something the user asked for or gave cannot be used; the message says how to fix it."""


class ModelError(UserError):
    """A model that cannot be built for its input (a kernel larger than the image, ...)."""


class TrainingDiverged(RuntimeError):
    """The training loss became NaN or infinite."""


class RanksDiffer(TrainingDiverged):
    """The ranks of a distributed run hold different parameters (train.py checks each epoch)."""


class TrainingInterrupted(Exception):
    """Ctrl-C during training. `saved` is the checkpoint written on the way out (or None);
    `between_steps`: the run stopped at a step boundary (every rank of a distributed run
    together), not at once in the middle of a step."""

    def __init__(self, message: str, saved=None, between_steps: bool = False):
        super().__init__(message)
        self.saved, self.between_steps = saved, between_steps
