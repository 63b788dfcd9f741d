"""The exceptions streamer raises, and when.

::

    StreamerError                   base of everything below
    ├── ConfigError                 invalid settings or declarations; fix the code or the env
    │   ├── AppLoadError            `module[:attr]` names no module, attribute or App
    │   └── TopicMismatchError      a declared topic disagrees with the cluster (partitions)
    ├── SerializationError          a value does not fit its topic's serde (names topic, field)
    ├── AgentFailed                 an agent's error policy said "stop"; its event stays uncommitted
    ├── RestoreFailed               a table partition could not be restored (or followed as a
    │                               standby); names table, partition and cause; the worker stops
    ├── KafkaUnavailableError       the broker cannot be reached (names the address)
    ├── KafkaOperationError         Kafka refused an operation (create topic, commit, ...)
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


class RestoreFailed(StreamerError):
    """Restoring a table partition from its changelog (or following it as a standby) failed
    with an error that is not transient, or kept failing past its retries. The worker closes
    the partition's stores and stops with a non-zero exit; the message names the table, the
    partition and the cause."""


class KafkaUnavailableError(StreamerError):
    """No broker answered at the configured bootstrap address."""


class KafkaOperationError(StreamerError):
    """Kafka refused an operation (topic creation, commit, produce) with an error."""


class LocalKafkaError(StreamerError):
    """The local development broker (`streamer kafka ...`) could not be started or stopped."""


class ToolMissingError(LocalKafkaError):
    """Java or Maven, needed to run the local broker, is not installed."""
