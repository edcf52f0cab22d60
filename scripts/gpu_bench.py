"""The GPU benchmark of the device check: every configuration in one process, so PyTorch and
CuPy load once. Each row is `convnet-gpu bench` (bench.run_benchmarks) for one configuration:

    PYTHONPATH=. python scripts/gpu_bench.py OUT.json [--quick]

simple-cnn at batch 128 and 1024, mini-resnet at 128 and 256, each in fp32 and tf32 against
PyTorch eager at the same precision, plus simple-cnn at batch 128 without CUDA graphs (what the
graphs buy) and our convolutions lowered in chunks of 16 MiB instead of the whole batch at once
(CONVNET_GPU_CONV_CHUNK_MIB: the lowered matrix and the GEMM's output each up to 16 MiB; compare
with the same model and batch above: the faster one should be the default). Prints the tables
as it goes and writes every row, with its configuration, as JSON.
"""

import json
import os
import sys
import time

from convnet_gpu.bench import run_benchmarks
from convnet_gpu.bench_table import format_table

CONFIGS = [  # (model, batch, precision, cuda_graph, MiB per conv chunk: 0 = the whole batch)
    ("simple-cnn", 128, "fp32", "auto", 0),
    ("simple-cnn", 1024, "fp32", "auto", 0),
    ("mini-resnet", 128, "fp32", "auto", 0),
    ("mini-resnet", 256, "fp32", "auto", 0),
    ("simple-cnn", 1024, "fp32", "auto", 16),  # item 5 of issue 9: chunks against whole batch
    ("mini-resnet", 256, "fp32", "auto", 16),
    ("simple-cnn", 128, "fp32", "auto", 16),
    ("simple-cnn", 128, "tf32", "auto", 0),
    ("simple-cnn", 1024, "tf32", "auto", 0),
    ("mini-resnet", 128, "tf32", "auto", 0),
    ("mini-resnet", 256, "tf32", "auto", 0),
    ("simple-cnn", 128, "fp32", "off", 0),
]


def main(out_path: str, quick: bool) -> None:
    steps, warmup = (5, 2) if quick else (30, 5)
    rows = []
    for model, batch, precision, graph, chunk_mib in CONFIGS:
        started = time.perf_counter()
        peer = "torch" if graph == "auto" and not chunk_mib else None
        os.environ["CONVNET_GPU_CONV_CHUNK_MIB"] = str(chunk_mib)  # read by each new backend
        results = run_benchmarks(
            ["cuda"],
            model,
            [batch],
            steps,
            warmup,
            peer=peer,
            precision=precision,
            cuda_graph=graph,
        )
        print(f"\n{model} batch {batch} {precision} cuda-graph {graph} conv chunks "
              f"{chunk_mib or 'off'} MiB ({time.perf_counter() - started:.1f} s)")  # fmt: skip
        print(format_table(results), flush=True)
        rows += [{**row, "cuda_graph_mode": graph, "conv_chunk_mib": chunk_mib} for row in results]
        with open(out_path, "w") as out:  # after every configuration: a timeout keeps the rest
            json.dump(rows, out, indent=1)


if __name__ == "__main__":
    main(sys.argv[1], "--quick" in sys.argv[2:])
