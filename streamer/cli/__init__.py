"""The ``streamer`` command.

Every user error (bad app path, invalid settings, broker unreachable, missing Java) ends in
one readable line on stderr and a non-zero exit; ``--debug`` shows the traceback instead.
Subcommands live in their own modules and are registered here.
"""

from __future__ import annotations

from streamer.cli.acls_cmd import acls
from streamer.cli.app_cmds import replay, worker
from streamer.cli.base import main
from streamer.cli.dlq_cmd import dlq
from streamer.cli.kafka_cmd import kafka
from streamer.cli.offsets_cmd import offsets
from streamer.cli.send_cmd import send
from streamer.cli.status_cmd import status
from streamer.cli.tables_cmd import tables
from streamer.cli.topology_cmd import topology

main.add_command(kafka)
main.add_command(worker)
main.add_command(send)
main.add_command(replay)
main.add_command(dlq)
main.add_command(offsets)
main.add_command(status)
main.add_command(tables)
main.add_command(topology)
main.add_command(acls)

__all__ = ["main"]
