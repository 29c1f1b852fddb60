"""Channels: a wire protocol on one side, a `Session` on the other."""
