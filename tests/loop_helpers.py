"""Test helper: an asyncio loop on its own thread, for tests that block on MQTT conditions."""

from __future__ import annotations

from gridflex.loop_thread import LoopThread

__all__ = ["LoopThread"]
