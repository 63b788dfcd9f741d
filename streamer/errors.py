"""The exceptions streamer raises, and when.

::

    StreamerError                   base of everything below
    ├── ConfigError                 invalid settings or declarations; fix the code or the env
    │   ├── AppLoadError            `module[:attr]` names no module, attribute or App
    │   └── TopicMismatchError      a declared topic disagrees with the cluster (partitions)
    ├── SerializationError          a value does not fit its topic's serde (names topic, field)
    ├── AgentFailed                 an agent's error policy said "stop"; its event stays uncommitted
    ├── ShutdownIncomplete          the worker stopped before every event in flight completed
    ├── RequestTimeout              ``agent.ask()`` got no reply in time (also a TimeoutError)
    ├── RestoreFailed               a table partition could not be restored (or followed as a
    │                               standby); names table, partition and cause; the worker stops
    ├── KafkaUnavailableError       the broker cannot be reached (names the address)
    ├── KafkaOperationError         Kafka refused an operation (create topic, commit, ...)
    │   ├── KafkaAccessError        credentials refused, or an ACL missing (names which)
    │   ├── OutputRefused           the broker refused an agent's output (too large, not allowed)
    │   └── CommitFailed            a checkpoint could not commit; its work stays uncommitted
    └── LocalKafkaError             the local development broker cannot start or stop
        └── ToolMissingError        Java or Maven is not installed (says how to get it)

Every message is one line a user can act on; the CLI prints it without a traceback
(``--debug`` shows the traceback).
"""

from __future__ import annotations


class StreamerError(Exception):
    """Base class of all streamer errors."""


class ConfigError(StreamerError):
    """Settings, a declaration or an argument is invalid. Raised at start, never mid-stream."""


class AppLoadError(ConfigError):
    """`streamer worker module[:attr]` could not load an App from that path."""


class TopicMismatchError(ConfigError):
    """A declared topic disagrees with what the cluster has (for example its partition count)."""


class SerializationError(StreamerError):
    """A key or value cannot be (de)serialized with its topic's serde.

    The message names the topic and, where the serde can tell, the field at fault.
    """


class AgentFailed(StreamerError):
    """An agent failed on an event and its ErrorPolicy says ``on_exhausted="stop"``."""


class ShutdownIncomplete(StreamerError):
    """The worker stopped (``shutdown_timeout`` passed, or a commit failed) before every
    event in flight completed. Nothing was lost: those events stay uncommitted and are
    processed again by the next owner of their partitions."""


class RequestTimeout(StreamerError, TimeoutError):
    """``agent.ask()`` got no reply within its timeout: the agent is down, busy, or failed
    on the request (its error policy dead-lettered or skipped it). A reply arriving later
    is dropped and counted by the asking process."""


class RestoreFailed(StreamerError):
    """Restoring a table partition from its changelog (or following it as a standby) failed
    with an error that is not transient, or kept failing past its retries. The worker closes
    the partition's stores and stops with a non-zero exit; the message names the table, the
    partition and the cause."""


class KafkaUnavailableError(StreamerError):
    """No broker answered at the configured bootstrap address."""


class KafkaOperationError(StreamerError):
    """Kafka refused an operation (topic creation, commit, produce) with an error."""


class KafkaAccessError(KafkaOperationError):
    """The broker refused the credentials (authentication), or no ACL allows an operation
    (authorization). The message names the operation and the resource, so the missing ACL
    can be granted (``streamer acls APP --principal ...`` lists them all)."""


class LocalKafkaError(StreamerError):
    """The local development broker (`streamer kafka ...`) could not be started or stopped."""


class ToolMissingError(LocalKafkaError):
    """Java or Maven, needed to run the local broker, is not installed."""


class OutputRefused(KafkaOperationError):
    """The broker refused a record an agent produced (larger than the topic's
    ``max.message.bytes``, not authorised, invalid). It is the agent's failure on the event
    that produced it: the agent's :class:`~streamer.ErrorPolicy` retries, dead-letters,
    skips or stops, as for an exception.

    ``attempts`` counts how many times the event's outputs were refused so far.
    """

    def __init__(self, message: str, *, topic: str, code: str, attempts: int = 1) -> None:
        super().__init__(message)
        self.topic = topic
        self.code = code
        self.attempts = attempts


class CommitFailed(KafkaOperationError):
    """A checkpoint could not commit (the transaction was aborted or fenced, outputs were
    not acknowledged). Its outputs, changelog records and offsets were dropped together and
    its partitions rewound or released: the events are processed again, never skipped."""
