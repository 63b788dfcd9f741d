"""The running process: pump, lanes, offsets, checkpoint, rebalance."""

from streamer.worker.loader import load_app
from streamer.worker.runner import Worker, run_worker

__all__ = ["Worker", "load_app", "run_worker"]
