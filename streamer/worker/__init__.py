"""The running process: pump, lanes, offsets, checkpoint, rebalance."""

from streamer.worker.runner import Worker, run_worker

__all__ = ["Worker", "run_worker"]
