"""Test doubles that run as real servers on 127.0.0.1: fake vendor upstreams and the gateway."""

from .gateway import GatewayServer
from .upstream import FakeUpstream, RecordedRequest, recording, split_events

__all__ = ["FakeUpstream", "GatewayServer", "RecordedRequest", "recording", "split_events"]
