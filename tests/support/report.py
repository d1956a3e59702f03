"""pytest plugin: a table of every test's wall time (set-up, call and tear-down together), and
the figures the tests measured (the `figure` fixture: also JUnit properties).

pytest's own --durations lists the phases apart, which hides what a module-scoped fixture costs
behind the first test that uses it; this table charges each test for all three.
"""

from __future__ import annotations

from collections import defaultdict

import pytest

_seconds: dict[str, float] = defaultdict(float)
_outcome: dict[str, str] = {}
_figures: dict[str, str] = {}


@pytest.fixture(scope="session")
def figure(record_testsuite_property):
    """figure(name, value): a measured figure, in the JUnit report and the summary at the end."""
    def record(name: str, value: object) -> None:
        _figures[name] = str(value)
        record_testsuite_property(name, value)

    return record


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    _seconds[report.nodeid] += report.duration
    if report.failed:
        _outcome[report.nodeid] = "failed" if report.when == "call" else "error"
    elif report.skipped:
        _outcome.setdefault(report.nodeid, "skipped")
    else:
        _outcome.setdefault(report.nodeid, "passed")


def pytest_terminal_summary(terminalreporter) -> None:
    write = terminalreporter.write_line
    if _figures:
        terminalreporter.section("figures measured")
        width = max(len(name) for name in _figures)
        for name, value in _figures.items():
            write(f"{name:<{width}}  {value}")
    if not _seconds:
        return
    terminalreporter.section("duration of every test (set-up + call + tear-down), slowest first")
    write(f"{'seconds':>8}  {'outcome':<8} test")
    for nodeid, seconds in sorted(_seconds.items(), key=lambda entry: -entry[1]):
        write(f"{seconds:8.2f}  {_outcome.get(nodeid, '?'):<8} {nodeid}")
    per_file: dict[str, float] = defaultdict(float)
    for nodeid, seconds in _seconds.items():
        per_file[nodeid.split("::", 1)[0]] += seconds
    write("")
    for path, seconds in sorted(per_file.items()):
        write(f"{seconds:8.2f}  {'total':<8} {path}")
    write(f"{sum(_seconds.values()):8.2f}  {'total':<8} {len(_seconds)} tests")
