"""The rule that keeps CI honest: with CI=true nothing skips, outside CI a missing tool skips
loudly. Each case runs a small pytest session of its own with the project's plugin loaded."""

from __future__ import annotations

from pathlib import Path

import pytest

TESTS_DIR = Path(__file__).resolve().parent.parent

NEEDS_A_MISSING_TOOL = """
from support.tools import require_tool

def test_needs_a_tool():
    require_tool("no-such-tool-for-the-harness-test", "apt-get install nothing")
"""

SKIPS_BY_ITSELF = """
import pytest

def test_skips():
    pytest.skip("some reason")
"""

SKIPPED_MODULE = """
import pytest

pytest.importorskip("no_such_module_for_the_harness_test")

def test_never_runs():
    pass
"""

OPTIONAL_TOOL = """
import pytest

@pytest.mark.optional_tool
def test_optional():
    pytest.skip("no compiler here")
"""


def run_session(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, source: str, ci: bool):
    monkeypatch.setenv("PYTHONPATH", str(TESTS_DIR))
    if ci:
        monkeypatch.setenv("CI", "true")
    else:
        monkeypatch.delenv("CI", raising=False)
    pytester.makeini("[pytest]\nmarkers =\n    optional_tool: may skip under CI\n")
    pytester.makepyfile(test_case=source)
    return pytester.runpytest_subprocess("-p", "support.ci_policy", "-rs")


def test_a_missing_tool_fails_the_test_under_ci(pytester, monkeypatch):
    result = run_session(pytester, monkeypatch, NEEDS_A_MISSING_TOOL, ci=True)
    result.assert_outcomes(failed=1)


def test_a_missing_tool_skips_the_test_outside_ci_and_says_how_to_install_it(pytester, monkeypatch):
    result = run_session(pytester, monkeypatch, NEEDS_A_MISSING_TOOL, ci=False)
    result.stdout.fnmatch_lines(["*missing tool: no-such-tool-for-the-harness-test*apt-get install nothing*"])


def test_a_test_that_skips_itself_fails_under_ci(pytester, monkeypatch):
    result = run_session(pytester, monkeypatch, SKIPS_BY_ITSELF, ci=True)
    result.assert_outcomes(failed=1)


def test_a_module_that_skips_at_import_fails_under_ci(pytester, monkeypatch):
    result = run_session(pytester, monkeypatch, SKIPPED_MODULE, ci=True)
    assert result.ret != 0


def test_a_test_marked_optional_tool_may_skip_under_ci(pytester, monkeypatch):
    result = run_session(pytester, monkeypatch, OPTIONAL_TOOL, ci=True)
    result.assert_outcomes(skipped=1)
