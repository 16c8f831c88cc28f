"""Protocols on secret shares in a CrypTen session: the session itself (:mod:`.session`),
secure statistics and selection, the dealer (:mod:`.dealer`) and the primitives below them
(:mod:`.primitives`)."""
