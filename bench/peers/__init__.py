"""The peers: the stateless and count scenarios written with Quix Streams and faust-streaming,
run on the same broker and input as streamer's, each peer in a virtualenv of its own.

Parent side (streamer's virtualenv): :mod:`bench.peers.venvs` makes the virtualenvs,
:mod:`bench.peers.run` sets up topics, starts a peer's child process and turns what it
reports into rows. Child side (the peer's virtualenv, which has neither streamer nor its
dependencies): :mod:`bench.peers.child` and one app module per peer,
:mod:`bench.peers.quixstreams_app` and :mod:`bench.peers.faust_app`. Nothing here imports
a peer's package in the parent, and none of them is a dependency of streamer.
"""
