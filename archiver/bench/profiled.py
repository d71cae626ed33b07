"""`python -m archiver.bench.profiled {sample,cprofile} SYNC-OPTIONS...`: a profiled `archiver sync`, in this process.

It runs `archiver sync --migrate SYNC-OPTIONS` (API and database from the environment, as
`runs.profile_sync` sets them) with every thread sampled (`sampling`) or profiled by cProfile (`phases`),
prints the sync's output, then, as its last line, the time by thread role and phase as JSON (`Breakdown`).
"""

from __future__ import annotations

import json
import sys

from archiver.bench.phases import profile_threads
from archiver.bench.sampling import sample_threads

METHODS = {"sample": sample_threads, "cprofile": profile_threads}


def main(argv: list[str]) -> int:
    """Run the sync under the chosen method; print its output, then the breakdown."""
    from archiver.cli import main as cli_main

    method, *options = argv
    status = 0

    def sync() -> None:
        nonlocal status
        sys.argv = ["archiver", "sync", "--migrate", *options]
        try:
            cli_main()
        except SystemExit as exc:
            status = exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 1

    breakdown = METHODS[method](sync)
    print(json.dumps(breakdown.as_json()), flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
