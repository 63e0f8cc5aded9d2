"""The test suite's own selection rule: ``--full`` scenarios are skipped by their marker, nothing else."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from ingest.settings import REPO_ROOT

SAMPLE = '''
import pytest

def test_quick():
    pass

@pytest.mark.full
def test_long():
    pass
'''


def test_a_checkout_in_a_directory_named_full_still_runs_its_tests(tmp_path: Path) -> None:
    # A copy of the suite's conftest and a two-test file, under .../full/tests/.
    tests = tmp_path / "full" / "tests"
    tests.mkdir(parents=True)
    shutil.copy(REPO_ROOT / "tests" / "conftest.py", tests / "conftest.py")
    (tests / "__init__.py").write_text("")
    (tests / "test_sample.py").write_text(SAMPLE)
    (tmp_path / "full" / "pytest.ini").write_text("[pytest]\nmarkers =\n    full: long\n    integration: real\n")
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--strict-markers",
                          str(tests)], cwd=tmp_path / "full", capture_output=True, text=True, timeout=120,
                         env={"PYTHONPATH": str(REPO_ROOT), "PATH": "/usr/bin:/bin"})
    assert "1 passed, 1 skipped" in run.stdout, run.stdout[-2000:] + run.stderr[-2000:]
