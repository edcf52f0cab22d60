"""How `convnet-gpu train --distributed` runs as one rank of several (mpiexec starts them all).

Every rank runs the same command. Rank 0 alone prints and writes the run folder; the others
are silent (stdout discarded, no progress bar). Which GPU and how many CPU threads a rank takes
follow from its place on its host (local rank, local ranks).

Errors: what is refused before MPI starts (check_rank_flags, a missing mpi4py, CuPy, NCCL or
GPU) every rank refuses alike and prints. NCCL failing to start once MPI has (taking the GPU,
drawing the unique id) is agreed on over MPI (open_rank_communicator): rank 0 prints it; a rank
that cannot join NCCL's communicator prints it and aborts (the others wait inside NCCL). A setup
error on any rank (a flag, the data, the checkpoint) is agreed on before
training (agree_on_setup): rank 0 prints it, naming the rank, and every rank exits 2. During
training the decisions that end a run are collective (Ctrl-C at a step boundary, a NaN, early
stopping), so every rank leaves together. Anything else happens to one rank alone, and the
others would wait for it in their next collective forever: that rank prints its error and
aborts the MPI job (run_as_rank), which ends every rank within about a second.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
import traceback

from ..errors import TrainingDiverged, TrainingInterrupted, UserError
from .common import UsageError, as_flags
from .parser import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_USAGE

ABORT_GRACE_S = 0.5  # how long a rank that ends the job waits for its error line to be relayed


class AgreedError(UsageError):
    """A setup error of one rank or more, raised by every rank together (rank 0 prints it)."""


# What MPI launchers tell their processes about the launch: MPICH's hydra, Open MPI. Not
# Slurm's SLURM_STEP_NUM_TASKS: srun also starts tasks that are meant to run alone (README).
LAUNCH_SIZE_VARIABLES = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE")


def launched_processes() -> int:
    """How many processes an MPI launcher started with this one (1 when none did)."""
    sizes = [os.environ.get(name, "") for name in LAUNCH_SIZE_VARIABLES]
    return max([int(size) for size in sizes if size.isdigit()] + [1])


def check_rank_flags(args, command: str = "train") -> None:
    """The flags --distributed cannot take, refused alike on every rank before MPI starts, and
    a launch of several processes without --distributed (each would do all the work, into the
    same folder). A sweep's points train alone (Local, whose steps can be recorded in CUDA
    graphs), so `sweep --distributed mpi` takes --cuda-graph on."""
    engine = args.distributed
    if engine == "none":
        launched = launched_processes()
        if launched > 1:
            raise UsageError(
                f"started by an MPI launcher as one of {launched} processes, each of which "
                f"would {command} alone into the same folder; add --distributed mpi"
            )
        return
    if args.cuda_graph == "on" and command != "sweep":
        raise UsageError(
            f"--distributed {engine} runs steps eagerly (its collectives are not recorded in "
            f"CUDA graphs); drop --cuda-graph on"
        )
    if engine == "nccl" and not (args.device == "auto" or args.device == "cuda"):
        raise UsageError(
            f"--distributed nccl reduces gradients between GPUs, one per rank (rank r takes "
            f"cuda:<its local rank>); give --device cuda, not {args.device}, or use "
            f"--distributed mpi on the CPU"
        )


def open_rank_communicator(engine: str, prog: str):
    """open_communicator(engine) for a command. A communicator that fails to start once MPI has
    (SetupFailed): failed together, rank 0 raises its one line and the others exit 2 silently;
    failed on this rank alone (the others wait in NCCL's start-up), its line and an abort."""
    from ..distributed import SetupFailed, open_communicator

    try:
        return open_communicator(engine)
    except SetupFailed as exc:
        if exc.together:
            _leave_together(exc.control, EXIT_USAGE)
            raise AgreedError(str(exc)) from None
        _abort(exc.control, prog, exc, EXIT_USAGE)
        raise SystemExit(EXIT_USAGE) from None  # MPICH's abort may return before the end


def rank_device(device: str, comm) -> str:
    """The device a rank trains on: with several ranks, `cuda` (and `auto` where the rank's GPU
    is) means the GPU of the rank's place on its host, cuda:<local rank>; `auto` where that GPU
    is not means the CPU."""
    if comm.size == 1 or device not in ("cuda", "auto"):
        return device
    if device == "auto":
        from ..backends import cuda_problem

        problem = cuda_problem(comm.local_rank)
        if problem is not None:
            # No GPU of this local rank: the CPU, said as get_backend says it ("auto" itself
            # would look at GPU 0, and the ranks of a host with one GPU would all take it).
            print(f"device auto: using the CPU ({problem.split(';')[0]})", flush=True)
            return "cpu"
    return f"cuda:{comm.local_rank}"


def rank_threads(threads: int | None, comm) -> int:
    """--threads, or this host's cores shared among its ranks; one where the MPI library takes
    calls from the main thread only (BatchNorm's sums would come from a worker thread)."""
    from ..machine import machine_cores

    if not getattr(comm, "threads_may_call", True):
        if threads and threads > 1:
            raise UsageError(
                f"this MPI library takes calls from the main thread only, so a rank runs on one "
                f"thread; drop --threads {threads} and start more ranks per host instead"
            )
        return 1
    return threads or max(1, machine_cores() // comm.local_size)


@contextlib.contextmanager
def silent_unless_root(comm):
    """Rank 0 prints; the others' stdout goes nowhere."""
    if comm.is_root:
        yield
        return
    with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):
        yield


def agree_on_setup(comm, error) -> None:
    """Every rank calls this after setting up (error: its UsageError, UserError or OSError, or
    None). If any rank failed, all raise: rank 0 an AgreedError with the first failure's line
    (naming the rank unless it is rank 0's own), the others a silent exit 2."""
    from . import describe_error

    lines = comm.all_gather(None if error is None else describe_error(error))
    failed = [(rank, line) for rank, line in enumerate(lines) if line is not None]
    if not failed:
        return
    if not comm.is_root:
        raise SystemExit(EXIT_USAGE)
    rank, line = failed[0]
    raise AgreedError(line if rank == 0 else f"rank {rank}: {line}")


def run_as_rank(comm, work, prog: str, stops_together: bool = True):
    """work() on this rank; an error this rank alone meets ends every rank (see the module).
    stops_together False: the ranks do not decide a Ctrl-C together (a sweep's ranks train
    alone), so one that stops ends the others too. A terminal's Ctrl-C reaches every rank of a
    sweep: the first to stop aborts the others mid-step, and their points lose what they trained
    since their last checkpoint (saved atomically, so nothing is damaged; the sweep run again
    resumes them)."""
    if comm.size == 1:
        return work()
    try:
        return work()
    except SystemExit:
        raise
    except (AgreedError, TrainingDiverged) as exc:  # every rank raises it at the same point
        _leave_together(comm, EXIT_USAGE if isinstance(exc, AgreedError) else EXIT_FAILED)
        raise
    except TrainingInterrupted as exc:
        if exc.between_steps and stops_together:  # decided together at a step boundary
            _leave_together(comm, EXIT_INTERRUPTED)
            raise
        _abort(comm, prog, exc, EXIT_INTERRUPTED)
    except KeyboardInterrupt as exc:
        _abort(comm, prog, exc, EXIT_INTERRUPTED)
    except (UsageError, UserError, OSError) as exc:
        _abort(comm, prog, exc, EXIT_USAGE)
    except BaseException as exc:  # a bug or MemoryError: the traceback, then end the job
        _abort(comm, prog, exc, EXIT_FAILED, with_traceback=True)


def _leave_together(comm, code: int) -> None:
    """A collective end: rank 0 lets main() print it, the others exit silently."""
    if not comm.is_root:
        raise SystemExit(code)


def _abort(comm, prog: str, exc: BaseException, code: int, with_traceback=False):
    from . import describe_error

    if with_traceback:
        traceback.print_exc()
    text = describe_error(exc) if isinstance(exc, (UserError, OSError)) else as_flags(str(exc))
    print(f"{prog}: rank {comm.rank}: {text or type(exc).__name__}; ending every rank",
          file=sys.stderr, flush=True)  # fmt: skip
    # The launcher relays a rank's output through a pipe; MPI_Abort tears the job down at
    # once and could drop the line on the way (seen with MPICH's hydra about 1 time in 8).
    time.sleep(ABORT_GRACE_S)
    comm.abort(code)
