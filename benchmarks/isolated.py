"""Measurements in a fresh process each, so that a measurement's peak memory is its own."""

import multiprocessing
import resource


def run_isolated(target, *args):
    """``target(*args, queue)`` in a new (spawned) process; returns what it put on ``queue``."""
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=target, args=(*args, queue))
    process.start()
    result = queue.get()
    process.join()
    return result


def peak_memory(cuda: bool) -> int:
    """Bytes: peak allocated GPU memory (``torch.cuda.max_memory_allocated``), or on the CPU the
    process's peak resident memory (``ru_maxrss``)."""
    if cuda:
        import torch

        return torch.cuda.max_memory_allocated()
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
