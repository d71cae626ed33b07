"""Serve the fake API from its own process, answering metric queries on stdin.

The benchmark runs this module as a subprocess, so the archiver's peak RSS and CPU are its own.
Protocol: the first stdout line is the base URL; each `metrics` line on stdin is answered with
one JSON line; `reset` forgets recorded requests; `advance` lets a night pass and answers what it
changed, as a JSON string; end of input stops the server.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from archiver.fake_api import FakeBaseten, OrgSpec, advance, serve


@dataclass(frozen=True)
class Metrics:
    """What the fake saw since its last reset."""

    requests: int
    rate_limited: int
    max_in_flight: int
    max_in_one_second: int
    checkpoints: int  # in the organisation, for rates


def metrics(fake: FakeBaseten) -> Metrics:
    """Summarize the fake's request records."""
    return Metrics(
        requests=len(fake.requests),
        rate_limited=sum(record.status == 429 for record in fake.requests),
        max_in_flight=fake.max_in_flight,
        max_in_one_second=fake.max_requests_in_window(1.0),
        checkpoints=fake.total_checkpoints(),
    )


class FakeServer:
    """A handle on a fake API subprocess."""

    def __init__(self, process: subprocess.Popen[str], url: str) -> None:
        self._process = process
        self.url = url

    def _ask(self, command: str) -> str:
        assert self._process.stdin is not None and self._process.stdout is not None
        self._process.stdin.write(command + "\n")
        self._process.stdin.flush()
        return self._process.stdout.readline()

    def metrics(self) -> Metrics:
        """The fake's request metrics since the last reset."""
        return Metrics(**json.loads(self._ask("metrics")))

    def reset(self) -> None:
        """Forget recorded requests."""
        self._ask("reset")

    def advance(self) -> str:
        """Let a night pass in the organisation (`archiver.fake_api.nights`); say what it changed."""
        return str(json.loads(self._ask("advance")))


@contextmanager
def fake_server(
    spec: OrgSpec, *, latency_ms: float = 0.0, rate_limit: float | None = None
) -> Iterator[FakeServer]:
    """Start a fake API process serving `spec`; stop it on exit."""
    command = [sys.executable, "-m", "archiver.bench.fake_server", json.dumps(spec.__dict__)]
    command += ["--latency-ms", str(latency_ms)]
    if rate_limit is not None:
        command += ["--rate-limit", str(rate_limit)]
    process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        url = process.stdout.readline().strip()
        if not url:
            raise RuntimeError("the fake API process exited before serving")
        yield FakeServer(process, url)
    finally:
        if process.stdin is not None:
            process.stdin.close()
        process.wait(timeout=30)


def main(argv: list[str] | None = None) -> None:
    """Serve until stdin closes."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("spec", help="OrgSpec fields as a JSON object")
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--rate-limit", type=float, default=None)
    args = parser.parse_args(argv)
    fields: dict[str, Any] = json.loads(args.spec)
    fake = FakeBaseten(OrgSpec(**fields), latency_ms=args.latency_ms, rate_limit_rps=args.rate_limit)
    lock = threading.Lock()
    with serve(fake) as url:
        print(url, flush=True)
        for line in sys.stdin:
            with lock:
                if line.strip() == "metrics":
                    print(json.dumps(metrics(fake).__dict__), flush=True)
                elif line.strip() == "reset":
                    fake.reset_metrics()
                    print("ok", flush=True)
                elif line.strip() == "advance":
                    print(json.dumps(str(advance(fake))), flush=True)


if __name__ == "__main__":
    main()
