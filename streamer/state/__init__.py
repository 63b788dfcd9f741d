"""State: tables in RocksDB (rocksdict), their changelog topics, and recovery."""

from streamer.state.table import Table

__all__ = ["Table"]
