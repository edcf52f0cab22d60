"""CPU thread scaling against PyTorch: each contender in a process of its own, rounds in
alternating order, medians (issue 8's method).

    PYTHONPATH=. python scripts/cpu_scaling.py OUT.json [--threads 1,2,4,8,16] [--rounds 3]
        [--models simple-cnn,mini-resnet] [--budget-s 100]

For every model, thread count and round: a training step at batch 128 and inference at batch
1000 (float32, synthetic Fashion-MNIST-shaped batches, `convnet-gpu bench`'s timing), ours on
`--threads T` and PyTorch with torch.set_num_threads(T). Prints one line per thread count (medians,
the ratios to PyTorch and the per-core efficiency img/s(T) / (T * img/s(1))) and writes every
measurement as JSON after each one, so a time limit keeps what finished. Thread counts above the
machine's cores are skipped; --budget-s stops starting new measurements after that many seconds.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

from convnet_gpu.machine import machine_cores

TRAIN_BATCH, INFER_BATCH = 128, 1000
ENGINES = ("convnet_gpu", "torch")


def measure_one(engine: str, model: str, threads: int) -> dict:
    """In the child process: one contender's training and inference figures."""
    from convnet_gpu.bench import bench_convnet_gpu, bench_torch

    bench = bench_convnet_gpu if engine == "convnet_gpu" else bench_torch
    common = dict(device="cpu", model=model, seed=0, threads=threads)
    train = bench(batch_size=TRAIN_BATCH, steps=8, warmup=2, **common)
    infer = bench(batch_size=INFER_BATCH, steps=4, warmup=1, train=False, **common)
    return {
        "engine": engine, "model": model, "threads": threads, "device": train["device"],
        "train_images_per_second": train["train_images_per_second"],
        "infer_images_per_second": infer["infer_images_per_second"],
    }  # fmt: skip


def run_child(engine: str, model: str, threads: int) -> dict:
    command = [sys.executable, __file__, "--one", engine, model, str(threads)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{engine} {model} x{threads}: {done.stderr.strip().splitlines()[-1]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def median(rows, engine: str, model: str, threads: int, key: str) -> float:
    values = [r[key] for r in rows if (r["engine"], r["model"], r["threads"]) ==
              (engine, model, threads)]  # fmt: skip
    return statistics.median(values) if values else float("nan")


def summarize(rows: list[dict], model: str, threads: int) -> str:
    train, infer = "train_images_per_second", "infer_images_per_second"
    ours_train, torch_train = (median(rows, e, model, threads, train) for e in ENGINES)
    ours_infer, torch_infer = (median(rows, e, model, threads, infer) for e in ENGINES)
    efficiency = ours_train / (threads * median(rows, "convnet_gpu", model, 1, train))
    return (
        f"{model:<12} {threads:>3} threads  train {ours_train:8.0f} img/s vs torch "
        f"{torch_train:8.0f} = {ours_train / torch_train:5.2f}x   infer {ours_infer:8.0f} vs "
        f"{torch_infer:8.0f} = {ours_infer / torch_infer:5.2f}x   per-core efficiency "
        f"{efficiency:4.2f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--threads", default="1,2,4,8,16")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--models", default="simple-cnn")
    parser.add_argument("--budget-s", type=float, default=float("inf"))
    args = parser.parse_args()
    cores = machine_cores()
    thread_counts = [t for t in map(int, args.threads.split(",")) if t <= cores]
    started, rows = time.monotonic(), []
    print(f"CPU thread scaling on {cores} cores, medians of {args.rounds} rounds", flush=True)
    for model in args.models.split(","):
        for threads in thread_counts:
            for round_index in range(args.rounds):
                engines = ENGINES[:: 1 if round_index % 2 == 0 else -1]
                for engine in engines:
                    if time.monotonic() - started > args.budget_s:
                        print("budget spent: stopping", flush=True)
                        return
                    rows.append(run_child(engine, model, threads))
                    with open(args.out, "w") as out:
                        json.dump(rows, out, indent=1)
            print(summarize(rows, model, threads), flush=True)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--one"]:
        engine, model, threads = sys.argv[2], sys.argv[3], int(sys.argv[4])
        print(json.dumps(measure_one(engine, model, threads)))
    else:
        main()
