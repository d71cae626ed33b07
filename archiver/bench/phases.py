"""Where a sync's time goes: profile every thread of a real `archiver sync` and sum the time by phase.

`profile_threads` runs work (see `archiver.bench.profiled`) with a `cProfile` profiler in each thread:
the main thread, which plans, reads the answers and is the run's only writer, and every fetch worker
(started by `threading.setprofile` as the thread starts); `archiver.bench.sampling` samples the same
threads' stacks instead, at little cost. Either sums the time by thread role and phase (`Breakdown`).

Each function's own time goes to the phase its module and name say (`PHASES` and `phase_of`). A function
no rule names (a builtin such as `dict.get`, or `threading`'s plumbing) passes its time up to its
callers, in proportion to the time each call edge took, until a named one takes it: `zlib.compress`
counts where `Kept.of` called it, a lock wait where the HTTP pool or the fetch queue waited on it.
Time with nothing to do (a fetch worker waiting for work, the writer waiting for answers) is `WAIT`,
not work. cProfile slows Python code more than C code (the driver, zlib), so shares lean towards
Python phases; the run's wall time beside an unprofiled one's says by how much. Per-thread cProfile
needs Python 3.11: from 3.12 one profiler sees every thread (`available`).
"""

from __future__ import annotations

import cProfile
import sys
import threading
from collections import defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from archiver.bench.clocks import Measured

HTTP = "HTTP (request to body read)"
MASK = "key masking (bodies, headers)"
PARSE = "parse (json)"
NORMALIZE = "contract checks + normalize"
KEPT = "kept responses (hash, compress)"
DIFF = "version diff"
ROWS = "write: rows and statements"
EXECUTE = "write: driver execute"
OTHER = "other"
WAIT = "waiting (idle)"
PHASES = (HTTP, MASK, PARSE, NORMALIZE, KEPT, DIFF, ROWS, EXECUTE, OTHER)

WRITER = "writer"  # the main thread: it plans, takes the fetchers' answers and writes every transaction
FETCHERS = "fetch workers"
OTHERS = "other threads"  # the --max-run-time timer: it only waits
ROLES = (WRITER, FETCHERS, OTHERS)

# (path fragment, function name or "" for any) -> phase; the first that matches names the phase.
_RULES: tuple[tuple[str, str, str], ...] = (
    ("archiver/answer.py", "json", PARSE),
    ("archiver/answer.py", "_scan", KEPT),  # a large body: hashed, compressed and checked for the key
    ("archiver/answer.py", "", HTTP),
    ("archiver/client.py", "", HTTP),
    ("archiver/bounds.py", "", HTTP),
    ("/httpx/", "", HTTP),
    ("/httpcore/", "", HTTP),
    ("/h11/", "", HTTP),
    ("/http/", "", HTTP),
    ("/socket.py", "", HTTP),
    ("/selectors.py", "", HTTP),
    ("/ssl.py", "", HTTP),
    ("archiver/redaction.py", "", MASK),
    ("/json/", "", PARSE),
    ("/ijson/", "", PARSE),
    ("archiver/streamed.py", "outline", PARSE),
    ("archiver/streamed.py", "", NORMALIZE),
    ("archiver/contract.py", "", NORMALIZE),
    ("archiver/normalize.py", "", NORMALIZE),
    ("archiver/paging.py", "", NORMALIZE),
    ("archiver/responses.py", "of", KEPT),
    ("/hashlib.py", "", KEPT),
    ("archiver/versioning.py", "save_versions", DIFF),
    ("archiver/versioning.py", "archived_rows", DIFF),
    ("/sqlalchemy/engine/default.py", "do_execute", EXECUTE),
    ("/sqlalchemy/engine/default.py", "do_executemany", EXECUTE),
    ("/sqlalchemy/engine/default.py", "do_execute_no_params", EXECUTE),
    ("/psycopg/", "", EXECUTE),
    ("/psycopg_binary/", "", EXECUTE),
    ("/sqlite3/", "", EXECUTE),
    ("/sqlalchemy/", "", ROWS),
    ("archiver/store.py", "", ROWS),
    ("archiver/versioning.py", "", ROWS),
    ("archiver/db.py", "", ROWS),
    ("archiver/bulk.py", "", ROWS),
    ("archiver/schema.py", "", ROWS),
    ("archiver/responses.py", "", ROWS),
    ("/queue.py", "get", WAIT),  # a fetch worker waiting for work
    ("/concurrent/futures/_base.py", "wait", WAIT),  # the writer waiting for answers
    ("/concurrent/futures/_base.py", "result", WAIT),
    ("/concurrent/futures/thread.py", "_worker", WAIT),  # a fetch worker waiting for work
    ("/threading.py", "wait", WAIT),  # an Event or Condition: pacing, a timer, the writer's wait
)
# Builtins (cProfile files them under "~"), by a fragment of their description.
_BUILTINS: tuple[tuple[str, str], ...] = (
    ("sqlite3.", EXECUTE),
    ("psycopg", EXECUTE),
    ("zlib.", KEPT),
    ("_hashlib.", KEPT),
    ("_queue.SimpleQueue", WAIT),  # a fetch worker waiting for work
    ("_json.", PARSE),
    ("json.", PARSE),
)
# Generator expressions and comprehensions inside a named function count as that function.
_NESTED = ("<genexpr>", "<listcomp>", "<dictcomp>", "<setcomp>", "<lambda>")

Func = tuple[str, int, str]


def available() -> bool:
    """Whether each thread can have a profiler of its own (cProfile before Python 3.12)."""
    return sys.version_info < (3, 12)


def phase_of(func: Func, enclosing: Callable[[Func], str | None] | None = None) -> str | None:
    """The phase a profiled function's own time belongs to, or None to pass it to its callers."""
    path, _, name = func
    if path == "~":
        return next((phase for fragment, phase in _BUILTINS if fragment in name), None)
    path = path.replace("\\", "/")
    if name in _NESTED and enclosing is not None:
        name = enclosing(func) or name
    for fragment, function, phase in _RULES:
        if fragment in path and function in ("", name):
            return phase
    if "/archiver/" in path:
        return OTHER  # the sync's own orchestration, logging of its events, the ledger's Python
    return None


@dataclass
class Breakdown:
    """Seconds by thread role and phase (summed over a role's threads), and the profiled wall time."""

    wall_seconds: float = 0.0  # of the profiled sync command
    process_seconds: float = 0.0  # of the whole process, start-up included, as `runs.run_sync` times it
    seconds: dict[str, dict[str, float]] = field(default_factory=dict)  # role -> phase -> s
    threads: dict[str, int] = field(default_factory=dict)  # role -> how many threads
    # The time on a core over the same span (`clocks`): each role's threads, and the whole process,
    # the profiler's own thread included. Empty and 0 where threads' CPU time cannot be read.
    cpu_seconds: dict[str, float] = field(default_factory=dict)  # role -> s
    process_cpu_seconds: float = 0.0

    def of(self, role: str, phase: str) -> float:
        return self.seconds.get(role, {}).get(phase, 0.0)

    def total(self, phase: str) -> float:
        return sum(self.of(role, phase) for role in ROLES)

    def busy(self, role: str) -> float:
        return sum(self.of(role, phase) for phase in PHASES)

    def as_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Breakdown:
        return cls(
            data["wall_seconds"],
            data["process_seconds"],
            data["seconds"],
            data["threads"],
            data.get("cpu_seconds", {}),
            data.get("process_cpu_seconds", 0.0),
        )

    def measured(self, measured: Measured, profiler_thread: str | None = None) -> None:
        """Take the wall time of the span `measured` and the CPU time it read, by role, but for the
        profiler's own thread."""
        cpu: dict[str, float] = defaultdict(float)
        for name, seconds in measured.clocks.by_name().items():
            if name != profiler_thread:
                cpu[role_of(name)] += seconds
        self.wall_seconds = measured.wall_seconds
        self.cpu_seconds = dict(cpu)
        self.process_cpu_seconds = measured.process_cpu_seconds


def enclosing_names() -> Callable[[Func], str | None]:
    """Name a nested code object (a genexpr) by the function around it, from the modules' source lines."""
    import ast

    spans: dict[str, list[tuple[int, int, str]]] = {}

    def enclosing(func: Func) -> str | None:
        path, line, _ = func
        if path not in spans:
            try:
                with open(path, encoding="utf-8") as source:
                    tree = ast.parse(source.read())
            except (OSError, SyntaxError, ValueError):
                tree = ast.Module(body=[], type_ignores=[])
            spans[path] = [
                (node.lineno, node.end_lineno or node.lineno, node.name)
                for node in ast.walk(tree)
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
            ]
        inside = [(start, name) for start, end, name in spans[path] if start <= line <= end]
        return max(inside)[1] if inside else None

    return enclosing


def attribute(stats: dict[Func, Any], into: dict[str, float]) -> None:
    """Add one thread's cProfile stats (`Profile.stats`) to `into`, phase by phase."""
    enclosing = enclosing_names()
    phases: dict[Func, str | None] = {}

    def phase(func: Func) -> str | None:
        if func not in phases:
            phases[func] = phase_of(func, enclosing)
        return phases[func]

    mixes: dict[Func, dict[str, float]] = {}

    def mix(func: Func) -> dict[str, float]:
        """The phases a function's time belongs to, as shares: its own, or its callers' weighted by edge."""
        if func in mixes:
            return mixes[func]
        named = phase(func)
        callers = stats.get(func, (0, 0, 0.0, 0.0, {}))[4]
        if named is not None or not callers:
            mixes[func] = {named or OTHER: 1.0}
            return mixes[func]
        mixes[func] = {OTHER: 1.0}  # a call cycle back to here counts as other
        weights = {caller: edge[3] for caller, edge in callers.items()}
        total = sum(weights.values())
        shares: dict[str, float] = defaultdict(float)
        for caller, weight in weights.items():
            for name, share in mix(caller).items():
                shares[name] += share * (weight / total if total > 0 else 1 / len(weights))
        mixes[func] = dict(shares)
        return mixes[func]

    for func, (_, _, own, _, _) in stats.items():
        if own > 0:
            for name, share in mix(func).items():
                into[name] += own * share


def role_of(thread_name: str) -> str:
    if thread_name == "MainThread":
        return WRITER
    return FETCHERS if thread_name.startswith("fetch") else OTHERS


def profile_threads(work: Callable[[], object]) -> Breakdown:
    """Run `work` with a profiler in this thread and in every thread started meanwhile; sum by phase."""
    profilers: list[tuple[str, cProfile.Profile]] = []
    lock = threading.Lock()

    def start_in_thread(*_: object) -> None:
        profiler = cProfile.Profile()
        with lock:
            profilers.append((threading.current_thread().name, profiler))
        profiler.enable()  # replaces this hook in this thread

    main = cProfile.Profile()
    with Measured() as measured:
        threading.setprofile(start_in_thread)
        main.enable()
        try:
            work()
        finally:
            main.disable()
            threading.setprofile(None)
    breakdown = Breakdown()
    breakdown.measured(measured)
    seconds: dict[str, dict[str, float]] = {role: defaultdict(float) for role in ROLES}
    threads: dict[str, int] = dict.fromkeys(ROLES, 0)
    main.snapshot_stats()
    attribute(main.stats, seconds[WRITER])
    threads[WRITER] = 1
    with lock:
        others = list(profilers)
    for name, profiler in others:
        profiler.snapshot_stats()  # a finished thread's calls have all returned
        attribute(profiler.stats, seconds[role_of(name)])
        threads[role_of(name)] += 1
    breakdown.seconds = {role: dict(by_phase) for role, by_phase in seconds.items()}
    breakdown.threads = threads
    return breakdown


def table(breakdown: Breakdown) -> list[str]:
    """The breakdown as printed: seconds by phase and thread role, and each phase's share of the writer's busy time."""
    writer_busy = breakdown.busy(WRITER)
    fetchers = breakdown.threads.get(FETCHERS, 0)
    lines = [
        f"{'phase':<34}{'writer s':>9}{'fetchers s':>11}{'others s':>9}{'total s':>9}{'of writer busy':>15}"
    ]
    for phase in (*PHASES, WAIT):
        share = breakdown.of(WRITER, phase) / writer_busy if writer_busy and phase != WAIT else None
        lines.append(
            f"{phase:<34}{breakdown.of(WRITER, phase):>9.2f}{breakdown.of(FETCHERS, phase):>11.2f}"
            f"{breakdown.of(OTHERS, phase):>9.2f}{breakdown.total(phase):>9.2f}"
            + (f"{share:>15.1%}" if share is not None else "")
        )
    wall = breakdown.wall_seconds
    fetch_time = breakdown.busy(FETCHERS) + breakdown.of(FETCHERS, WAIT)  # the workers' lifetimes
    lines.append(
        f"writer (main thread) busy {writer_busy:.2f}s of {wall:.2f}s wall: {writer_busy / wall:.0%}; "
        f"{fetchers} fetch workers busy {breakdown.busy(FETCHERS):.2f}s of {fetch_time:.2f}s: "
        f"{breakdown.busy(FETCHERS) / fetch_time if fetch_time else 0:.0%}"
    )
    if breakdown.cpu_seconds:
        writer_cpu = breakdown.cpu_seconds.get(WRITER, 0.0)
        lines.append(
            f"on a core: writer {writer_cpu:.2f}s ({writer_cpu / wall if wall else 0:.0%} of the wall; "
            f"busy but not running {max(writer_busy - writer_cpu, 0.0):.2f}s), "
            f"fetch workers {breakdown.cpu_seconds.get(FETCHERS, 0.0):.2f}s, "
            f"other threads {breakdown.cpu_seconds.get(OTHERS, 0.0):.2f}s; the whole process "
            f"{breakdown.process_cpu_seconds:.2f}s of CPU in {wall:.2f}s "
            f"({breakdown.process_cpu_seconds / wall if wall else 0:.2f} cores)"
        )
    return lines
