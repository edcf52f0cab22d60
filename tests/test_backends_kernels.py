"""backends/kernels: every CUDA kernel source compiles with NVRTC, on any machine (no GPU needed).

NVRTC comes from the pip package nvidia-cuda-nvrtc-cu12 (or a CUDA toolkit); CuPy's thin
wrapper `cupy_backends.cuda.libs.nvrtc` loads it lazily on the first call. If that fails, the
test preloads the pip copy from site-packages with ctypes and tries again; it skips (with the
reason) only when the wrapper cannot be imported or no NVRTC library can be loaded at all.
"""

from __future__ import annotations

import ctypes
import site
import sys
from pathlib import Path

import pytest

from convnet_gpu.backends.kernels import KERNEL_SOURCES, compile_options, read_source

ARCH = "-arch=compute_90"


def _pip_nvrtc_libraries() -> list[Path]:
    """libnvrtc shared libraries shipped by NVIDIA's pip wheels in any site-packages on sys.path."""
    roots = {Path(p) for p in sys.path if p}
    roots.update(Path(p) for p in site.getsitepackages())
    found = []
    for root in sorted(roots):
        for sub in ("nvidia/cuda_nvrtc/lib", "nvidia/cu13/lib", "nvidia/cu12/lib"):
            lib_dir = root / sub
            if lib_dir.is_dir():
                found += sorted(
                    p
                    for p in lib_dir.glob("libnvrtc.so*")
                    if "builtins" not in p.name and ".alt." not in p.name
                )
    return found


def _load_nvrtc():
    """The nvrtc wrapper module with a working library behind it, or skip with the reason."""
    try:
        from cupy_backends.cuda.libs import nvrtc
    except Exception as error:  # ImportError, or CuPy failing to initialise
        pytest.skip(f"cupy_backends.cuda.libs.nvrtc cannot be imported: {error!r}")
    try:
        nvrtc.getVersion()
        return nvrtc
    except Exception as first_error:
        candidates = _pip_nvrtc_libraries()
        if not candidates:
            pytest.skip(
                f"the NVRTC shared library cannot be loaded ({first_error!r}) and no pip "
                f"copy was found under site-packages/nvidia/cuda_nvrtc/lib "
                f"(pip install nvidia-cuda-nvrtc-cu12)"
            )
        errors = []
        for path in candidates:
            try:
                ctypes.CDLL(str(path), mode=ctypes.RTLD_GLOBAL)
                nvrtc.getVersion()
                return nvrtc
            except Exception as error:
                errors.append(f"{path}: {error!r}")
        pytest.skip(
            f"the NVRTC shared library cannot be loaded ({first_error!r}); preloading "
            f"failed too: {'; '.join(errors)}"
        )


@pytest.fixture(scope="module")
def nvrtc():
    return _load_nvrtc()


def _compile(nvrtc, source: str, name: str, name_expressions: list[str], options=None):
    """Compile a source; return (program, None) or (program, error message with the NVRTC log)."""
    program = nvrtc.createProgram(source, name, [], [])
    for expression in name_expressions:
        nvrtc.addNameExpression(program, expression)
    try:
        nvrtc.compileProgram(program, [ARCH, *(options or compile_options(name))])
    except nvrtc.NVRTCError as error:
        return program, f"{name} failed to compile ({error}):\n{nvrtc.getProgramLog(program)}"
    return program, None


@pytest.mark.parametrize("file_name", sorted(KERNEL_SOURCES))
def test_kernel_source_compiles(nvrtc, file_name):
    expressions = KERNEL_SOURCES[file_name]
    assert expressions, f"{file_name} lists no kernels to instantiate"
    program, failure = _compile(nvrtc, read_source(file_name), file_name, expressions)
    try:
        if failure:
            pytest.fail(failure)
        assert len(nvrtc.getPTX(program)) > 0, f"{file_name}: NVRTC produced no PTX"
        for expression in expressions:
            lowered = nvrtc.getLoweredName(program, expression)
            assert lowered, f"{file_name}: no lowered name for {expression}"
    finally:
        nvrtc.destroyProgram(program)


def test_kernel_sources_hold_no_python():
    for file_name in KERNEL_SOURCES:
        source = read_source(file_name)
        for marker in ("import ", "def ", '"""'):
            assert marker not in source, f"{file_name} contains Python ({marker.strip()!r})"


def test_broken_source_fails_to_compile(nvrtc):
    broken = (
        "template <typename T>\n"
        "__global__ void broken_kernel(T* out) { out[0] = T(1) }\n"
    )  # missing ';'
    program, failure = _compile(
        nvrtc, broken, "broken.cu", ["broken_kernel<float>"], options=["--std=c++17"]
    )
    try:
        assert failure is not None, "a source with a syntax error compiled"
        assert "broken.cu" in failure and "error" in failure, failure
    finally:
        nvrtc.destroyProgram(program)
