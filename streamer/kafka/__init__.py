"""Thin wrappers over confluent-kafka (clients, topic admin, error mapping) and the local
development broker (:mod:`streamer.kafka.local`).  Import from the submodules; this package
re-exports nothing so that importing one part never loads the others."""
