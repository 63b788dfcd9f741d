"""Free ports for local brokers (a broker listener P and its controller listener P+1)."""

from __future__ import annotations

import random
import socket
from pathlib import Path

from streamer.errors import LocalKafkaError

HOST = "127.0.0.1"  # local brokers listen on the loopback only

__all__ = ["HOST", "free_port_pair", "port_is_free"]


def port_is_free(port: int, host: str = HOST) -> bool:
    """True if nothing listens on ``host:port`` (a bind test; TIME_WAIT does not count)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # SO_REUSEADDR as the JVM sets it: a port in TIME_WAIT is usable, a listening one not.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port_pair(host: str = HOST) -> int:
    """A free port P such that P+1 is free too (broker and controller listeners).

    Chosen below the kernel's ephemeral range: a port from that range (what binding port 0
    gives) can be taken by any outgoing connection in the seconds before the JVM binds it,
    which a busy test session's hundreds of client connections did. Another process may
    still bind them explicitly before they are used; callers get a clear error then.
    """
    low = _ephemeral_range()[0]
    if low - 2 > 10_000:
        for _ in range(200):
            port = random.randrange(10_000, low - 2)
            if port_is_free(port, host) and port_is_free(port + 1, host):
                return port
    for _ in range(100):  # a kernel whose ephemeral range leaves no room below it
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))
            port = int(sock.getsockname()[1])
        if port < 65535 and port_is_free(port + 1, host) and port_is_free(port, host):
            return port
    raise LocalKafkaError(f"found no two consecutive free ports on {host}")


def _ephemeral_range() -> tuple[int, int]:
    """The ports the kernel hands to outgoing connections (Linux; its default elsewhere)."""
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999
