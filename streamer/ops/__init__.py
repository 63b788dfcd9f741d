"""Tools that act on an app's consumer group from outside any worker: committed offsets
(:mod:`~streamer.ops.offsets`), dead letters (:mod:`~streamer.ops.dlq`), local table state
(:mod:`~streamer.ops.state`) and replay planning (:mod:`~streamer.ops.replay`). The CLI
drives them; so can a script."""
