"""streamer: stream processing on Apache Kafka with async Python agents.

The public surface is exactly ``__all__``; everything else is private implementation.
"""

from streamer.agents import Agent, Stream
from streamer.app import App
from streamer.errors import (
    AgentFailed,
    AppLoadError,
    CommitFailed,
    ConfigError,
    KafkaAccessError,
    KafkaOperationError,
    KafkaUnavailableError,
    OutputRefused,
    RequestTimeout,
    SerializationError,
    ShutdownIncomplete,
    StreamerError,
    TopicMismatchError,
)
from streamer.events import Event, Record
from streamer.policy import ErrorPolicy
from streamer.replies import Reply
from streamer.serde import Serde, avro
from streamer.settings import ProcessingGuarantee, Settings
from streamer.state import Table, WindowedTable
from streamer.topics import Topic

__all__ = [
    "Agent",
    "AgentFailed",
    "App",
    "AppLoadError",
    "CommitFailed",
    "ConfigError",
    "ErrorPolicy",
    "Event",
    "KafkaAccessError",
    "KafkaOperationError",
    "KafkaUnavailableError",
    "OutputRefused",
    "ProcessingGuarantee",
    "Record",
    "Reply",
    "RequestTimeout",
    "Serde",
    "SerializationError",
    "Settings",
    "ShutdownIncomplete",
    "Stream",
    "StreamerError",
    "Table",
    "Topic",
    "TopicMismatchError",
    "WindowedTable",
    "avro",
]

__version__ = "0.1.0"
