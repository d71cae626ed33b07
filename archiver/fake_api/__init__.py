"""A deterministic fake of the Baseten training management API, for tests, the demo and the benchmark.

    generate    OrgSpec, and the organisation a seed yields; checkpoints regenerated on demand
    holdings    Holdings: what the organisation holds now, read as copies or as served
    org         Organisation: the state between nights and its mutations
    nights      advance / play_until: a night passes, the same for the same seed and night
    routes      the endpoints, answered from an Organisation
    responses   Response, and the shapes Baseten's errors take
    protocol    FakeBaseten: auth, rate limit, latency, faults, overrides, metrics, `handle`
    transport   FakeTransport: `handle` in-process behind an httpx transport
    server      serve / serve_forever: `handle` on loopback HTTP

Tests that need no socket pass `BasetenClient(..., transport=fake.transport())`; tests of the
`archiver` command serve the same fake with `serve(fake)`.
"""

from archiver.fake_api.generate import TERMINAL_STATUSES, OrgSpec
from archiver.fake_api.nights import Night, advance, play_until
from archiver.fake_api.org import Organisation
from archiver.fake_api.protocol import (
    BROKEN_KINDS,
    DEFAULT_API_KEY,
    FAULT_KINDS,
    FakeBaseten,
    Faults,
    Hook,
    RequestRecord,
)
from archiver.fake_api.responses import RATE_LIMIT_MESSAGE, Response
from archiver.fake_api.server import serve, serve_forever
from archiver.fake_api.transport import FakeTransport

__all__ = [
    "BROKEN_KINDS",
    "DEFAULT_API_KEY",
    "FAULT_KINDS",
    "RATE_LIMIT_MESSAGE",
    "TERMINAL_STATUSES",
    "FakeBaseten",
    "FakeTransport",
    "Faults",
    "Hook",
    "Night",
    "OrgSpec",
    "Organisation",
    "RequestRecord",
    "Response",
    "advance",
    "play_until",
    "serve",
    "serve_forever",
]
