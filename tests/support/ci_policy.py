"""pytest plugin: under CI=true a skipped test is a failed test.

`support.tools.require_tool` already fails under CI; this catches every other way a test could
skip (pytest.skip, importorskip, a skip marker). Tests marked `optional_tool` may still skip:
they need something that is not part of the project's toolchain (a Bicep compiler).
"""

from __future__ import annotations

import pytest

from support.tools import in_ci


def _reason(longrepr: object) -> str:
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2])
    return str(longrepr)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    outcome = yield
    report = outcome.get_result()
    if not (in_ci() and report.skipped) or hasattr(report, "wasxfail"):
        return
    if item.get_closest_marker("optional_tool") is not None:
        return
    report.outcome = "failed"
    report.longrepr = f"CI=true: a test may not skip ({_reason(report.longrepr)})"


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector: pytest.Collector):
    outcome = yield
    report = outcome.get_result()
    if in_ci() and report.skipped:
        report.outcome = "failed"
        report.longrepr = f"CI=true: a test module may not skip ({_reason(report.longrepr)})"
