"""The session's members connected pairwise over gRPC: :class:`PeerMesh`, the
:class:`~smpc_synth.net.channel.Channel` strategies use, made of its connections
(:mod:`.connection`), the handshake and barriers (:mod:`.handshake`), heartbeats and abort
(:mod:`.liveness`) and status (:mod:`.status`)."""

from smpc_synth.net.mesh.peer import PeerMesh

__all__ = ["PeerMesh"]
