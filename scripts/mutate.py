"""Mutation testing of one module with its own tests: a small AST driver (not part of the CI run).

    .venv/bin/python scripts/mutate.py edge/orders/routing.py [--tests tests/...] [--max N] [--json out.json]

Each mutant is one small change to the module (a comparison flipped, ``and``/``or`` swapped, ``+``/``-``, a number
±1, ``True``/``False``, an SQL word such as ``OR IGNORE`` → ``OR REPLACE``, ``return x`` → ``return None``, a call
statement removed, ``break``/``continue`` swapped, a condition negated). Docstrings, logging calls, ``assert`` and
type annotations are left alone. The mutated source is written over the module in place (restored in a ``finally``,
also on SIGINT/SIGTERM, with its old mtime) and the tests run in a subprocess: ``pytest -x -q -n 0`` with a timeout.
Killed: the tests fail, or time out. Survived: they pass.

Speed: one run of the tests under coverage first records which test executes which line of the module (a pytest
plugin in this file switches coverage's context per test). A mutant then runs only the tests that execute its line,
fastest first; a mutant on a line no test executes survives without a run. Module-level lines (constants, default
arguments) run at import, so every test of the module is run for them.

Why not mutmut: it copies the tree and runs the suite its own way, which fights pytest-asyncio, xdist and the
blocking-call guard; this is one module, one mutant at a time, the project's own pytest.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

# A module's own tests, fast files first. Chosen for what exercises the module in-process (coverage must see it).
DEFAULT_TESTS: dict[str, list[str]] = {
    "edge/orders/routing.py": ["tests/api/test_intake.py"],
    "edge/orders/intake.py": [
        "tests/orders/test_totals.py",
        "tests/api/test_intake.py",
        "tests/printing/test_job_outcomes.py",  # reprints ask the router where a copy goes
        "tests/orders/test_changes.py",  # order revisions: where change tickets go, OrderRevised, receipts on change
        "tests/orders/test_cancel_first.py",  # the cancel route for an order not here (yet), and its conflict
        "tests/printing/test_loop_lag.py",  # an order of 500 items, validated off the loop
        "tests/mqtt/test_intake.py",  # an order that arrives cancelled: received and cancelled told (OrderStored)
    ],
    "edge/store/orders.py": [
        "tests/store/test_orders.py",
        "tests/store/test_events_after_commit.py",
        "tests/api/test_intake.py",
        "tests/printing/test_job_outcomes.py",  # job keys
        "tests/store/test_retention.py",  # ids remembered past retention
        "tests/sync/test_recovery.py",  # recovery's batch insert and lookups
        "tests/orders/test_changes.py",  # revisions: classified and applied in the insert's transaction
        "tests/orders/test_content.py",  # the same order by meaning: written by another program, or before
        "tests/orders/test_cancel_first.py",  # a cancel kept for an order not here yet, settled when it comes
        "tests/sync/test_recovery_settles.py",  # recovery's revisions of orders cancelled here or kept as history
        "tests/sync/test_history.py",  # a new box's history orders, remembered and not printed
        "tests/orders/test_unreadable_stored.py",  # a group commit one order fails: the others stored one by one
        "tests/store/test_boot_waits.py",  # the boot each write notes for the waits a kill leaves (note_boot)
    ],
    "edge/printing/spooler.py": [
        "tests/printing/test_spool_timing.py",  # on a stopped clock: probe backoff, poll cadence, error pause
        "tests/printing/test_spooler.py",
        "tests/printing/test_job_outcomes.py",
        "tests/printing/test_job_states.py",
        "tests/printing/test_paper_fault.py",
        "tests/printing/test_batched_marks.py",  # claims in bursts, printed marks riding on commits
        "tests/printing/test_hold_failover.py",
        "tests/printing/test_clock_steps.py",
        "tests/printing/test_staleness.py",
    ],
    "edge/store/jobs.py": [
        "tests/printing/test_jobs_store.py",
        "tests/printing/test_job_states.py",
        "tests/printing/test_job_outcomes.py",
        "tests/printing/test_spooler.py",
        "tests/printing/test_paper_fault.py",
        "tests/printing/test_hold_failover.py",
        "tests/printing/test_rename.py",
        "tests/printing/test_staleness.py",
        "tests/printing/test_clock_steps.py",
        "tests/store/test_events_after_commit.py",
        "tests/printing/test_batched_marks.py",  # commit_marks: claims, printed marks and releases in one commit
        "tests/orders/test_changes.py",  # change tickets in turn, cancelled orders' jobs discarded, reprints
        "tests/printing/test_copies_and_originals.py",  # a person's COPY beside an original not printed yet
        "tests/api/test_job_reprint.py",  # a Reprint while a COPY is there: COPY_JUST_OUT_S, across clock steps
        "tests/store/test_boot_waits.py",  # boot_waits (stop 82's kill tests run in a subprocess) and endings
    ],
}

_LOG_ROOTS = {"log", "logger", "logging", "structlog"}

_CMP_SWAP: dict[type[ast.cmpop], type[ast.cmpop]] = {
    ast.Eq: ast.NotEq,
    ast.NotEq: ast.Eq,
    ast.Lt: ast.LtE,
    ast.LtE: ast.Lt,
    ast.Gt: ast.GtE,
    ast.GtE: ast.Gt,
    ast.Is: ast.IsNot,
    ast.IsNot: ast.Is,
    ast.In: ast.NotIn,
    ast.NotIn: ast.In,
}
_BIN_SWAP: dict[type[ast.operator], type[ast.operator]] = {
    ast.Add: ast.Sub,
    ast.Sub: ast.Add,
    ast.Mult: ast.Div,
    ast.Div: ast.Mult,
    ast.FloorDiv: ast.Div,
    ast.Pow: ast.Mult,
}
_SQL = re.compile(r"\b(SELECT|UPDATE|INSERT|DELETE|WHERE)\b")
# Word swaps inside SQL strings: (pattern, replacement).
_SQL_SWAPS: list[tuple[str, str]] = [
    (r"\bOR IGNORE\b", "OR REPLACE"),
    (r"\bAND\b", "OR"),
    (r"\bOR\b(?! (?:IGNORE|REPLACE))", "AND"),
    (r"\bDESC\b", "ASC"),
    (r"\bASC\b", "DESC"),
    (r"\bIS NULL\b", "IS NOT NULL"),
    (r"\bIS NOT NULL\b", "IS NULL"),
    (r"\bMIN\(", "MAX("),
    (r"\bMAX\(", "MIN("),
    (r"<=", "<"),
    (r">=", ">"),
    (r"(?<![<>=!])<(?![=>])", "<="),
    (r"(?<![<>=!-])>(?!=)", ">="),
    (r" \+ ", " - "),
    (r"(?<![?\w])1\b", "0"),  # a number, not a parameter's ?1
    (r"(?<![?\w])0\b", "1"),
]


@dataclasses.dataclass(frozen=True)
class Mutant:
    index: int  # node position in ast.walk order of a fresh parse
    op: str
    arg: Any
    line: int
    end_line: int
    in_function: bool
    before: str
    after: str
    changed: str = ""  # for a long string: the part that changed

    def label(self) -> str:
        return f"line {self.line}: {self.changed or f'{self.before} → {self.after}'}"


def _window(before: str, after: str) -> str:
    """The part of a long string a mutation changed, with some context."""
    start = next((i for i, (a, b) in enumerate(zip(before, after, strict=False)) if a != b), 0)
    left = max(0, start - 40)
    return f"...{before[left : start + 25]}... → ...{after[left : start + 25]}..."


def _short(node: ast.AST) -> str:
    text = " ".join(ast.unparse(node).split())
    return text if len(text) <= 90 else text[:87] + "..."


def _is_log_call(node: ast.AST) -> bool:
    if not isinstance(node, ast.Call):
        return False
    func = node.func
    while isinstance(func, ast.Attribute):
        func = func.value
    return isinstance(func, ast.Name) and func.id in _LOG_ROOTS


def _is_docstring(stmt: ast.stmt) -> bool:
    return isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant) and isinstance(stmt.value.value, str)


def _skipped(tree: ast.Module) -> set[int]:
    """ids of nodes (with everything under them) never mutated: docstrings, logging calls, asserts, annotations."""
    skip: set[int] = set()

    def mark(node: ast.AST | None) -> None:
        if node is not None:
            skip.update(id(n) for n in ast.walk(node))

    for node in ast.walk(tree):
        scoped = isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        if scoped and node.body and _is_docstring(node.body[0]):
            mark(node.body[0])
        if isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            for decorator in node.decorator_list:  # @dataclass(frozen=True): a type's shape, not behaviour
                mark(decorator)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            mark(node.returns)
        elif isinstance(node, ast.arg | ast.AnnAssign):
            mark(node.annotation)
        elif isinstance(node, ast.Assert | ast.Import | ast.ImportFrom) or _is_log_call(node):
            mark(node)
        if isinstance(node, ast.Expr) and _is_log_call(node.value):
            mark(node)  # the statement too, or removing it would be a mutant
    return skip


def _function_nodes(tree: ast.Module) -> set[int]:
    """ids of nodes inside a function body (run by a test, not at import)."""
    inside: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            body = node.body if isinstance(node.body, list) else [node.body]
            for stmt in body:
                inside.update(id(n) for n in ast.walk(stmt))
    return inside


def _options(node: ast.AST) -> Iterator[tuple[str, Any]]:
    """The mutations possible at one node: (op, arg)."""
    if isinstance(node, ast.Compare):
        for i, cmp in enumerate(node.ops):
            if type(cmp) in _CMP_SWAP:
                yield "cmp", i
    elif isinstance(node, ast.BoolOp):
        yield "boolop", None
    elif isinstance(node, ast.BinOp) and type(node.op) in _BIN_SWAP:
        yield "binop", None
    elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
        yield "drop_not", None
    elif isinstance(node, ast.Constant):
        value = node.value
        if isinstance(value, bool):
            yield "const", not value
        elif isinstance(value, int | float):
            yield "const", value + 1
        elif isinstance(value, str) and _SQL.search(value):
            for pattern, replacement in _SQL_SWAPS:
                for match in re.finditer(pattern, value):
                    yield "const", value[: match.start()] + replacement + value[match.end() :]
    elif isinstance(node, ast.Return) and node.value is not None:
        if not (isinstance(node.value, ast.Constant) and node.value.value is None):
            yield "return_none", None
    elif isinstance(node, ast.Expr):
        call = node.value.value if isinstance(node.value, ast.Await) else node.value
        if isinstance(call, ast.Call):
            yield "remove", None
    elif isinstance(node, ast.Break | ast.Continue):
        yield "swap_loop", None
    elif isinstance(node, ast.If | ast.While | ast.IfExp) and not isinstance(node.test, ast.Compare | ast.UnaryOp):
        yield "negate", None


def _replace(parent: ast.AST, old: ast.AST, new: ast.AST) -> None:
    for field, value in ast.iter_fields(parent):
        if value is old:
            setattr(parent, field, new)
            return
        if isinstance(value, list):
            for i, item in enumerate(value):
                if item is old:
                    value[i] = new
                    return
    raise LookupError("node not under its parent")


def _apply(tree: ast.Module, node: ast.AST, op: str, arg: Any) -> ast.AST:
    """Mutate ``node`` (inside ``tree``) in place or swap it in its parent; returns the node now in its place."""
    parents = {id(child): parent for parent in ast.walk(tree) for child in ast.iter_child_nodes(parent)}
    new: ast.AST = node
    if op == "cmp":
        assert isinstance(node, ast.Compare)
        node.ops[arg] = _CMP_SWAP[type(node.ops[arg])]()
    elif op == "boolop":
        assert isinstance(node, ast.BoolOp)
        node.op = ast.Or() if isinstance(node.op, ast.And) else ast.And()
    elif op == "binop":
        assert isinstance(node, ast.BinOp)
        node.op = _BIN_SWAP[type(node.op)]()
    elif op == "drop_not":
        assert isinstance(node, ast.UnaryOp)
        new = node.operand
    elif op == "const":
        assert isinstance(node, ast.Constant)
        node.value = arg
    elif op == "return_none":
        assert isinstance(node, ast.Return)
        node.value = ast.Constant(None)
    elif op == "remove":
        new = ast.Pass()
    elif op == "swap_loop":
        new = ast.Continue() if isinstance(node, ast.Break) else ast.Break()
    elif op == "negate":
        assert isinstance(node, ast.If | ast.While | ast.IfExp)
        node.test = ast.UnaryOp(op=ast.Not(), operand=node.test)
    if new is not node:
        _replace(parents[id(node)], node, new)
    return new


def enumerate_mutants(source: str) -> list[Mutant]:
    tree = ast.parse(source)
    skip = _skipped(tree)
    inside = _function_nodes(tree)
    mutants: list[Mutant] = []
    for index, node in enumerate(ast.walk(tree)):
        if id(node) in skip or not hasattr(node, "lineno"):
            continue
        for op, arg in _options(node):
            scratch = ast.parse(source)
            target = list(ast.walk(scratch))[index]
            if op == "negate":  # the condition, not the whole block
                assert isinstance(node, ast.If | ast.While | ast.IfExp)
                before = _short(node.test)
                after = f"not ({before})"
            else:
                before = _short(node)
                after = "(removed)" if op == "remove" else _short(_apply(scratch, target, op, arg))
            line, end = node.lineno, node.end_lineno or node.lineno
            changed = _window(node.value, arg) if isinstance(node, ast.Constant) and isinstance(arg, str) else ""
            mutants.append(Mutant(index, op, arg, line, end, id(node) in inside, before, after, changed))
    return mutants


def mutated_source(source: str, mutant: Mutant) -> str:
    tree = ast.parse(source)
    _apply(tree, list(ast.walk(tree))[mutant.index], mutant.op, mutant.arg)
    return ast.unparse(ast.fix_missing_locations(tree)) + "\n"


# --- the pytest plugin (loaded with -p mutate in the coverage run) -------------------------------------------------

_COV: Any = None
if os.environ.get("MUTATE_COVERAGE_DATA"):
    import coverage

    _COV = coverage.Coverage(
        data_file=os.environ["MUTATE_COVERAGE_DATA"], include=[os.environ["MUTATE_COVERAGE_INCLUDE"]]
    )
    _COV.start()  # at import of the plugin: before conftest files import the module
    _DURATIONS: dict[str, float] = {}


def pytest_runtest_protocol(item: Any, nextitem: Any) -> None:
    if _COV is not None:
        _COV.switch_context(item.nodeid)


def pytest_runtest_logreport(report: Any) -> None:
    if _COV is not None:
        _DURATIONS[report.nodeid] = _DURATIONS.get(report.nodeid, 0.0) + report.duration


_FAILED = False


def pytest_sessionfinish(session: Any, exitstatus: int) -> None:
    global _FAILED
    _FAILED = exitstatus != 0


def pytest_unconfigure(config: Any) -> None:
    if _COV is not None:
        _COV.stop()
        _COV.save()
        Path(os.environ["MUTATE_COVERAGE_DATA"] + ".durations.json").write_text(json.dumps(_DURATIONS))
    elif _FAILED and os.environ.get("MUTATE_EXIT_ON_FAILURE"):
        # A mutant run that failed is killed, whatever happens next. A test that failed before closing its database
        # leaves aiosqlite's thread running, and the interpreter would wait for it until the budget ran out: exit now.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(1)


# --- the driver -----------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Baseline:
    durations: dict[str, float]  # node id → seconds, every test that passed
    lines: dict[int, set[str]]  # line → node ids of the tests that executed it
    flaky: list[str]  # failed once unmutated, passed again: left out


def _pytest_cmd(timeout: int) -> list[str]:
    return [sys.executable, "-m", "pytest", "-x", "-q", "-n", "0", "-p", "no:cacheprovider", f"--timeout={timeout}"]


def measure(module: Path, tests: list[str], timeout: int) -> Baseline:
    """The tests once, unmutated, under coverage with one context per test. A test that fails here and passes when run
    again is flaky (on a loaded machine, say): it could "kill" a mutant by chance, so it is left out, and said so."""
    import coverage

    with tempfile.TemporaryDirectory(prefix="mutate-") as tmp:
        data = str(Path(tmp) / "coverage")
        env = os.environ | {
            "MUTATE_COVERAGE_DATA": data,
            "MUTATE_COVERAGE_INCLUDE": str(module),
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "scripts"), os.environ.get("PYTHONPATH")])),
        }
        cmd = [*_pytest_cmd(timeout), "-rfE", "-p", "mutate", *tests]  # without -x: every test, once
        cmd.remove("-x")
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
        failed = set(re.findall(r"^(?:FAILED|ERROR) (\S+)", proc.stdout, re.MULTILINE))
        if proc.returncode != 0 and not failed:
            sys.exit(f"the tests could not run (exit {proc.returncode}):\n{proc.stdout[-3000:]}")
        if failed:
            again = subprocess.run([*_pytest_cmd(timeout), *sorted(failed)], cwd=ROOT, capture_output=True, text=True)
            if again.returncode != 0:
                sys.exit(f"the tests fail on the unmutated module:\n{again.stdout[-3000:]}")
            print(f"left out, flaky (failed once, then passed): {', '.join(sorted(failed))}", file=sys.stderr)
        durations = {k: v for k, v in json.loads(Path(data + ".durations.json").read_text()).items() if k not in failed}
        cov = coverage.CoverageData(basename=data)
        cov.read()
        lines: dict[int, set[str]] = {}
        for path in cov.measured_files():
            if Path(path).resolve() == module:
                for line, contexts in cov.contexts_by_lineno(path).items():
                    lines[line] = {c for c in contexts if c and c not in failed}
    return Baseline(durations=durations, lines=lines, flaky=sorted(failed))


def constant_uses(source: str, others: list[str]) -> dict[int, set[int]]:
    """For a module-level constant (``NAME = ...``, such as an SQL fragment): line → the lines inside functions that
    read it, directly or through other constants built from it. A mutant there shows only where it is read, so only the
    tests running those lines need to run. Left out (every test runs): names other modules use (``others``: their
    source), and lines of anything else at module level (class bodies, default arguments)."""
    tree = ast.parse(source)
    inside = _function_nodes(tree)
    assigned: dict[str, ast.Assign] = {}
    for stmt in tree.body:
        if isinstance(stmt, ast.Assign) and all(isinstance(t, ast.Name) for t in stmt.targets):
            assigned.update((t.id, stmt) for t in stmt.targets if isinstance(t, ast.Name))
    reads: dict[str, set[int]] = {name: set() for name in assigned}  # function lines reading each name
    feeds: dict[str, set[str]] = {name: set() for name in assigned}  # constant → constants built from it
    # The whole statement reading a name: coverage records a statement spread over lines at its first line.
    statement: dict[int, ast.stmt] = {}
    for stmt in ast.walk(tree):
        if isinstance(stmt, ast.stmt) and id(stmt) in inside:
            statement.update((id(child), stmt) for child in ast.walk(stmt))  # breadth first: the innermost last
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load) and node.id in assigned:
            if id(node) in inside:
                stmt = statement[id(node)]
                reads[node.id].update(range(stmt.lineno, (stmt.end_lineno or stmt.lineno) + 1))
            else:
                feeds[node.id].update(
                    n for n, stmt in assigned.items() if stmt.lineno <= node.lineno <= (stmt.end_lineno or stmt.lineno)
                )
    uses: dict[int, set[int]] = {}
    for name, stmt in assigned.items():
        seen, todo, lines = {name}, [name], set()
        while todo:
            current = todo.pop()
            lines |= reads[current]
            todo += [n for n in feeds[current] - seen]
            seen |= feeds[current]
        if any(re.search(rf"\b{re.escape(n)}\b", text) for n in seen for text in others):
            continue
        for line in range(stmt.lineno, (stmt.end_lineno or stmt.lineno) + 1):
            uses.setdefault(line, set()).update(lines)
    return uses


def select(mutant: Mutant, baseline: Baseline, uses: dict[int, set[int]]) -> list[str]:
    """The tests to run against a mutant, fastest first."""
    if mutant.in_function or mutant.line in uses:
        lines = range(mutant.line, mutant.end_line + 1) if mutant.in_function else uses[mutant.line]
        ids: set[str] = set()
        for line in lines:
            ids |= baseline.lines.get(line, set())
    else:
        ids = set(baseline.durations)
    return sorted(ids, key=lambda i: (baseline.durations.get(i, 0.0), i))


def run_tests(ids: list[str], timeout: int, budget: float) -> tuple[str, str]:
    """('killed', the test that failed first), ('survived', '') or ('timeout', '') (counted as killed)."""
    env = os.environ | {
        "PYTHONDONTWRITEBYTECODE": "1",  # a mutant's .pyc must never be picked up later
        "MUTATE_EXIT_ON_FAILURE": "1",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "scripts"), os.environ.get("PYTHONPATH")])),
    }
    with (
        tempfile.TemporaryFile() as out,
        subprocess.Popen(
            [*_pytest_cmd(timeout), "-rfE", "-p", "mutate", *ids],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        ) as proc,
    ):
        try:
            code = proc.wait(timeout=budget)
        except subprocess.TimeoutExpired:
            return "timeout", ""
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        out.seek(0)
        text = out.read().decode(errors="replace")
    if code == 4:
        # The ids ran in the unmutated baseline: not found now, the mutant broke their collection (an import that
        # fails). Before stop 83 this ended the whole run (the mut83 helper, store/jobs.py).
        return "killed", "collection failed under the mutant (pytest exit 4)"
    if code == 5:
        sys.exit(f"pytest could not run the selected tests (exit {code}): {ids[:3]}...")
    if code == 0:
        return "survived", ""
    failed = re.search(r"^(?:FAILED|ERROR) (\S+)", text, re.MULTILINE)
    return "killed", failed.group(1) if failed else f"pytest exit {code}"


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _wanted(mutant: Mutant, lines: set[int] | None, only: set[tuple[int, str]] | None) -> bool:
    if lines is not None and not lines & set(range(mutant.line, mutant.end_line + 1)):
        return False
    return only is None or (mutant.line, f"{mutant.before} → {mutant.after}") in only


def mutate_module(
    module: Path,
    tests: list[str],
    *,
    timeout: int,
    limit: int | None,
    quiet: bool,
    lines: set[int] | None = None,
    only: set[tuple[int, str]] | None = None,
) -> dict[str, Any]:
    """Every mutant of ``module`` (on ``lines``; those in ``only``, as (line, mutation); the first ``limit``) against
    ``tests``."""
    rel = module.relative_to(ROOT).as_posix()
    original = module.read_bytes()
    stat = module.stat()
    source = original.decode()
    started = time.monotonic()
    mutants = [m for m in enumerate_mutants(source) if _wanted(m, lines, only)][:limit]
    others = [p.read_text() for p in (ROOT / "edge").rglob("*.py") if p.resolve() != module]
    uses = constant_uses(source, others)
    baseline = measure(module, tests, timeout)
    results: list[dict[str, Any]] = []
    signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        for n, mutant in enumerate(mutants, 1):
            ids = select(mutant, baseline, uses)
            if not ids:
                outcome, by = "not covered", ""
            else:
                module.write_text(mutated_source(source, mutant))
                try:
                    budget = 20 + 3 * sum(baseline.durations.get(i, 1.0) for i in ids)
                    outcome, by = run_tests(ids, timeout, budget)
                finally:
                    module.write_bytes(original)
                    os.utime(module, ns=(stat.st_atime_ns, stat.st_mtime_ns))
            results.append(
                {
                    "line": mutant.line,
                    "mutation": f"{mutant.before} → {mutant.after}",
                    "changed": mutant.changed,
                    "outcome": outcome,
                    "killed_by": by,
                }
            )
            if not quiet:
                by = f"  (by {by})" if by else ""
                print(f"[{n}/{len(mutants)}] {outcome:>11}  {mutant.label()}{by}", file=sys.stderr, flush=True)
    finally:
        module.write_bytes(original)
        os.utime(module, ns=(stat.st_atime_ns, stat.st_mtime_ns))
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    assert module.read_bytes() == original, f"{rel} was not restored"
    counts = {k: sum(r["outcome"] == k for r in results) for k in ("killed", "timeout", "survived", "not covered")}
    killers: dict[str, int] = {}
    for r in results:
        if r["killed_by"]:
            killers[r["killed_by"]] = killers.get(r["killed_by"], 0) + 1
    dead = counts["killed"] + counts["timeout"]
    return {
        "module": rel,
        "tests": tests,
        "mutants": len(results),
        "killed": counts["killed"],
        "timed_out": counts["timeout"],
        "survived": counts["survived"] + counts["not covered"],
        "not_covered": counts["not covered"],
        "score": round(100 * dead / len(results), 1) if results else 100.0,
        "seconds": round(time.monotonic() - started),
        "survivors": [r for r in results if r["outcome"] in ("survived", "not covered")],
        "flaky_left_out": baseline.flaky,
        "killed_by": killers,  # test → mutants it failed on first (-x: a later test may kill them too)
        "results": results,
    }


def _carry_over(summary: dict[str, Any], earlier: dict[str, Any]) -> None:
    """Counts for the whole module from an earlier run plus a re-run of its survivors: what was killed then stays
    killed (tests were only added). Mutants are matched by line and label, so a label shared by several mutants may
    re-run one that was killed before; the score counts what survives now."""
    summary["mutants"] = earlier["mutants"]
    summary["timed_out"] += earlier["timed_out"]
    summary["killed"] = summary["mutants"] - summary["survived"] - summary["timed_out"]
    summary["score"] = round(100 * (summary["mutants"] - summary["survived"]) / summary["mutants"], 1)
    summary["seconds"] += earlier["seconds"]


def _report(summary: dict[str, Any], write: Callable[[str], None]) -> None:
    write(
        f"{summary['module']}: {summary['mutants']} mutants, {summary['killed']} killed, {summary['timed_out']} timed"
        f" out, {summary['survived']} survived ({summary['not_covered']} on lines no test runs): score"
        f" {summary['score']} % in {summary['seconds']} s"
    )
    for survivor in summary["survivors"]:
        mark = " (not covered)" if survivor["outcome"] == "not covered" else ""
        write(f"  survived line {survivor['line']}: {survivor.get('changed') or survivor['mutation']}{mark}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("modules", nargs="+", help="modules to mutate, e.g. edge/orders/routing.py")
    parser.add_argument("--tests", nargs="+", help="test files or node ids (default: the module's own, see the map)")
    parser.add_argument("--max", type=int, help="only the first N mutants of each module")
    parser.add_argument("--timeout", type=int, default=30, help="seconds per test (pytest-timeout); a timeout kills")
    parser.add_argument("--json", type=Path, help="write the summaries as JSON here")
    parser.add_argument("--lines", help="only mutants touching these lines, e.g. 150-160,184")
    parser.add_argument(
        "--survivors",
        type=Path,
        help="only the survivors in this --json output of an earlier run (the module unchanged since): after adding"
        " tests, what they kill; the mutants killed before stay killed, as tests were only added",
    )
    parser.add_argument("--list", action="store_true", help="list the mutants and stop")
    parser.add_argument("--quiet", action="store_true", help="no line per mutant")
    args = parser.parse_args(argv)
    lines: set[int] | None = None
    if args.lines:
        lines = set()
        for part in args.lines.split(","):
            first, _, last = part.partition("-")
            lines.update(range(int(first), int(last or first) + 1))
    earlier = {s["module"]: s for s in json.loads(args.survivors.read_text())} if args.survivors else {}
    summaries = []
    for name in args.modules:
        module = (ROOT / name).resolve()
        rel = module.relative_to(ROOT).as_posix()
        if args.list:
            for mutant in enumerate_mutants(module.read_text()):
                print(mutant.label())
            continue
        tests = args.tests or DEFAULT_TESTS.get(rel)
        if not tests:
            parser.error(f"no default tests for {rel}: give --tests")
        only = None
        if args.survivors:
            if rel not in earlier:
                parser.error(f"{args.survivors} has no run of {rel}")
            only = {(s["line"], s["mutation"]) for s in earlier[rel]["survivors"]}
        summary = mutate_module(
            module, tests, timeout=args.timeout, limit=args.max, quiet=args.quiet, lines=lines, only=only
        )
        if args.survivors:  # the score of the whole module: the earlier run's kills stand
            _carry_over(summary, earlier[rel])
        _report(summary, print)
        summaries.append(summary)
    if args.json:
        args.json.write_text(json.dumps(summaries, indent=2, ensure_ascii=False) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
