"""State: tables in RocksDB (rocksdict), their changelog topics, and recovery."""

from streamer.state.table import Table
from streamer.state.windows import WindowedTable

__all__ = ["Table", "WindowedTable"]
