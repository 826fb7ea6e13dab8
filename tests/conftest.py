"""Suite-wide settings.

The suite runs with pytest-xdist (``-n 2``) on 2-core machines. Each worker uses one BLAS/OpenMP
thread: two workers with two threads each oversubscribe the cores, and OpenMP's spin-waiting
then makes small matmuls 50-1000x slower (measured on the 2-core CI machine kind).
Subprocesses spawned by tests (torchrun, multiprocessing) inherit OMP_NUM_THREADS.
"""
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

import torch  # noqa: E402

torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
