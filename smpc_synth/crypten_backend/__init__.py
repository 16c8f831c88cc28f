"""CrypTen glue: every patch of CrypTen in one table (:mod:`.compat`), our communicator over
a :class:`~smpc_synth.net.channel.Channel`, its object codec, links and per-party traffic.
Nothing here applies a patch at import; a session does, for its lifetime."""
