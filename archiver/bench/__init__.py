"""The benchmark: `python -m archiver.bench` measures the write path and whole syncs against the fake API.

`write_path` times our checkpoint upsert beside a raw-driver baseline; `runs` serves a generated
organisation from a separate process (`fake_server`) and times real `archiver sync` subprocesses,
reading their peak RSS from the kernel; `profiled` runs one more sync with every thread sampled
(`sampling`) or profiled by cProfile, and `phases` sums its time by phase and thread; `scratch` makes and
drops the databases (the test suite's too); `__main__` runs it all and prints the figures with their
ratios; `history` appends them to `benchmarks/history.jsonl`.
"""
