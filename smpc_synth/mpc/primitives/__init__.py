"""Protocols on secret shares: the ring, the PRG, Beaver products, comparison, functions and
the span softmax. They run inside a CrypTen session and never open files or sockets."""
