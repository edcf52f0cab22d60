"""RunDir: a training run's folder and every file name in it, decided in one place.

    runs/simple-cnn-20261129-101500/
        checkpoint.npz   the state to resume or evaluate (checkpoint.py), after every epoch
        metrics.jsonl    one JSON object per finished epoch
        summary.json     the final figures and every setting
        eval.json        what `convnet-gpu eval` measured
        loss.png, accuracy.png, lr.png, confusion.png   what `convnet-gpu plot` draws

Every file is written atomically (fileio.py): a reader sees the old file or the new one.
"""

from __future__ import annotations

from pathlib import Path

from .fileio import remove_stale_temporaries, write_json_atomic, write_jsonl_atomic


class RunDir:
    CHECKPOINT = "checkpoint.npz"
    METRICS = "metrics.jsonl"
    SUMMARY = "summary.json"
    EVAL = "eval.json"
    PLOTS = ("loss.png", "accuracy.png", "lr.png", "confusion.png")

    def __init__(self, path):
        self.path = Path(path)

    @classmethod
    def of(cls, path) -> RunDir:
        """The run a path names: the run folder itself, or a file inside it (its checkpoint)."""
        path = Path(path)
        return cls(path.parent if path.is_file() else path)

    @property
    def checkpoint(self) -> Path:
        return self.path / self.CHECKPOINT

    @property
    def metrics(self) -> Path:
        return self.path / self.METRICS

    @property
    def summary(self) -> Path:
        return self.path / self.SUMMARY

    @property
    def eval_report(self) -> Path:
        return self.path / self.EVAL

    def plot(self, name: str) -> Path:
        if name not in self.PLOTS:
            raise ValueError(f"{name!r} is not one of a run's figures: {', '.join(self.PLOTS)}")
        return self.path / name

    def holds_run(self) -> bool:
        """True when a run was already saved here: its checkpoint, metrics or summary would be
        overwritten (any one of them: a run whose checkpoint was deleted still has its figures)."""
        return bool(self.run_files())

    def run_files(self) -> list[str]:
        """The names of the run's files saved here (checkpoint, metrics, summary), in that order."""
        files = (self.checkpoint, self.metrics, self.summary)
        return [file.name for file in files if file.exists()]

    def create(self) -> RunDir:
        self.path.mkdir(parents=True, exist_ok=True)
        return self

    def remove_stale_temporaries(self) -> None:
        """Delete what a killed earlier writer of this run left half-written; call it when this
        process becomes the run's one writer."""
        for file in (self.checkpoint, self.metrics, self.summary):
            remove_stale_temporaries(file)

    # A run has one writer, so a temporary file of its own beside it was left by a killed one.
    def write_metrics(self, records: list) -> None:
        remove_stale_temporaries(self.metrics)
        write_jsonl_atomic(self.metrics, records)

    def write_summary(self, summary: dict) -> None:
        remove_stale_temporaries(self.summary)
        write_json_atomic(self.summary, summary)

    def write_eval(self, report: dict) -> None:
        write_json_atomic(self.eval_report, report)

    def __str__(self) -> str:
        return str(self.path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"
