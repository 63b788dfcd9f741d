"""What the worker does with a consumed message that carries an error instead of a record.

Kept apart from the pump (``streamer.worker.runner``) because the decision has several
outcomes: a replay's end of partition moves its progress, a fatal error or a missing ACL
stops the worker with one line (neither heals by waiting; a group consumer's fatal error
is handed to the worker, which joins again with a new consumer), metadata lag after creating a
topic is not the user's concern, anything else is a warning and the pump goes on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

from confluent_kafka import KafkaError

from streamer.errors import KafkaOperationError
from streamer.kafka.access import access_denied
from streamer.kafka.backend import Message
from streamer.worker.partition import PartitionState

log = logging.getLogger("streamer.worker")


def on_message_error(
    message: Message,
    states: Mapping[tuple[str, int], PartitionState],
    group: str | None,
    on_fatal: Callable[[KafkaError], None] | None = None,
) -> None:
    """Handle ``message`` if its ``error()`` is set (nothing otherwise).

    A fatal error goes to ``on_fatal`` (the worker replaces a group consumer) or, without
    one, raises KafkaOperationError. Raises KafkaAccessError for an authorization failure;
    ``group`` is the consumer's group id when it needs an ACL (None for a replay, whose
    throw-away group reads by assignment and commits nothing).
    """
    err = message.error()
    if err is None:
        return
    if err.code() == KafkaError._PARTITION_EOF:
        state = states.get((message.topic(), message.partition()))  # type: ignore[arg-type]
        if state is not None and state.stop_offset is not None:
            state.fetched_to = max(state.fetched_to, message.offset() or 0)
        return
    # librdkafka hands some fatal errors to the consumer as a message with code _FATAL whose
    # fatal() is False, not to error_cb (a fenced static member, a KIP-848 heartbeat's
    # fatal error): check both.
    if err.fatal() or err.code() == KafkaError._FATAL:
        if on_fatal is not None:
            on_fatal(err)
            return
        raise KafkaOperationError(f"fatal consumer error: {err.str()}")
    if denied := access_denied(err, message.topic(), group):
        raise denied  # a missing ACL never heals by waiting
    if err.code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
        # Right after creating a topic, metadata can lag a moment.
        log.debug("consumer: %s", err.str())
        return
    log.warning("consumer: %s (%s[%s])", err.str(), message.topic(), message.partition())


__all__ = ["on_message_error"]
