"""CUDA C++ kernel sources that the CuPy backend compiles with NVRTC (cupy.RawModule).

One .cu file per kernel family; every kernel is a template over the element type, instantiated
by name expression. KERNEL_SOURCES is the single list of what gets instantiated: the CuPy
backend compiles exactly these, and tests/test_backends_kernels.py compiles them on a CPU-only
machine. The index helpers the kernels share live in window.cuh, which read_source() puts in
front of each .cu file, followed by counter_hash.cuh, the random-number hash (NVRTC compiles
one string and has no include path). This module must not import cupy.
"""

from __future__ import annotations

from pathlib import Path

_DIR = Path(__file__).resolve().parent

# Shared by every .cu source: grid-stride range, flat-index splitting, window loops.
SHARED_HEADER = "window.cuh"
# Then the counter-based hash (random.cu, jitter.cu); harmless inline functions elsewhere.
HASH_HEADER = "counter_hash.cuh"

# The element types every kernel is instantiated for, and the index types of the window
# kernels (CUDA spelling; see window.cuh for when each index type is used).
ELEMENT_TYPES = ("float", "double")
INDEX_TYPES = ("int", "long long")


def _instantiate(*kernels: str) -> list[str]:
    return [f"{kernel}<{ctype}>" for kernel in kernels for ctype in ELEMENT_TYPES]


def _instantiate_window(*kernels: str) -> list[str]:
    return [
        f"{kernel}<{ctype}, {itype}>"
        for kernel in kernels
        for ctype in ELEMENT_TYPES
        for itype in INDEX_TYPES
    ]


KERNEL_SOURCES: dict[str, list[str]] = {
    "im2col.cu": _instantiate_window("im2col_kernel", "col2im_kernel"),
    "pooling.cu": _instantiate_window(
        "maxpool_forward_kernel",
        "maxpool_backward_kernel",
        "avgpool_forward_kernel",
        "avgpool_backward_kernel",
        "bias_relu_maxpool_forward_kernel",
        "bias_relu_maxpool_backward_kernel",
    ),
    "random.cu": _instantiate("uniform_kernel"),
    "jitter.cu": _instantiate("jitter_kernel"),
    "update.cu": _instantiate("sgd_update_kernel", "adam_update_kernel", "select_kernel"),
    "channel.cu": _instantiate_window(
        "channel_partials_kernel", "batchnorm_normalize_kernel", "batchnorm_input_grad_kernel"
    )
    + _instantiate(
        "channel_regroup_kernel", "channel_finish_kernel", "batchnorm_statistics_kernel"
    ),
}

# NVRTC options beyond the shared ones, per source. update.cu must round every multiply and add
# on its own (no fused multiply-add), as NumPy does, so the two updates agree bit for bit.
EXTRA_OPTIONS: dict[str, tuple[str, ...]] = {
    "update.cu": ("--fmad=false",),
    "channel.cu": ("--fmad=false",),
}


def compile_options(file_name: str) -> tuple[str, ...]:
    """The NVRTC options of one kernel source (the architecture is the caller's)."""
    return ("--std=c++17", *EXTRA_OPTIONS.get(file_name, ()))


def read_source(file_name: str) -> str:
    """The compilable text of one kernel source (e.g. "im2col.cu"): the headers, then the file.

    The #line markers make NVRTC report errors against the file and line they are really on.
    """
    if file_name not in KERNEL_SOURCES:
        raise KeyError(f"unknown kernel source {file_name!r}; known: {sorted(KERNEL_SOURCES)}")
    parts = [
        f'#line 1 "{name}"\n' + (_DIR / name).read_text(encoding="utf-8")
        for name in (SHARED_HEADER, HASH_HEADER, file_name)
    ]
    return "\n".join(parts)


def source_of(name_expression: str) -> str:
    """The .cu file that instantiates a name expression such as "im2col_kernel<float>"."""
    for file_name, expressions in KERNEL_SOURCES.items():
        if name_expression in expressions:
            return file_name
    raise KeyError(f"no kernel source instantiates {name_expression!r}")
