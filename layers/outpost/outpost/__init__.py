"""Outpost: the shared library behind the send API, the sender and the bounce processor."""

__version__ = "0.1.0"
