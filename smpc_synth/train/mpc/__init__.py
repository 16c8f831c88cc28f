"""Secure training: the MPC strategy (:mod:`.strategy`), the training loop, shared layers and
optimizer, each generator's twin on shares, DP-SGD on shares, and what a schema may carry."""
