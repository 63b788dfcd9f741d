"""Ports for local brokers: a free pair, outside the range outgoing connections draw from."""

from __future__ import annotations

import socket
from pathlib import Path

from streamer.kafka.ports import free_port_pair, port_is_free


def test_a_free_pair_lies_below_the_ephemeral_range_and_both_are_free() -> None:
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    ports = {free_port_pair() for _ in range(20)}
    for port in ports:
        assert 10_000 <= port < low - 1, port  # no outgoing connection can take it meanwhile
        assert port_is_free(port) and port_is_free(port + 1)
    assert len(ports) > 1  # drawn at random: parallel sessions do not race for one pair


def test_a_listening_port_is_not_free() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        assert not port_is_free(sock.getsockname()[1])
