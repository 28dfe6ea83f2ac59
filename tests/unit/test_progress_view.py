"""`ctpipe run`'s view of kfp.local's log: one line per event, errors kept."""

from __future__ import annotations

import io

from ctpipe.pipelines.local import ProgressView

KFP_LOG = """\
13:26:11.365 - INFO - Executing task \x1b[96m'ingest'\x1b[0m
13:26:11.365 - INFO - Streamed logs:
    [KFP Executor 2026-11-27 13:26:11,459 INFO]: Got executor_input:
    {
        "inputs": {}
    }
    [ctpipe:ingest] read 20,000 rows x 14 columns
13:26:11.472 - INFO - Task \x1b[96m'ingest'\x1b[0m finished with status \x1b[92mSUCCESS\x1b[0m
13:26:11.475 - INFO - Executing task \x1b[96m'train'\x1b[0m
    Traceback (most recent call last):
      File "ephemeral_component.py", line 12, in train
    MemoryError: cannot allocate 12 GiB
13:26:11.566 - INFO - Task \x1b[96m'train'\x1b[0m finished with status \x1b[91mFAILURE\x1b[0m
13:26:11.698 - INFO - Skipping conditional task condition-2 (condition evaluated to False)
"""


def test_shows_step_lines_and_the_exception_of_a_failed_step() -> None:
    out = io.StringIO()
    view = ProgressView(out)
    for chunk in (KFP_LOG[:100], KFP_LOG[100:333], KFP_LOG[333:]):  # arbitrary chunking
        view.write(chunk)
    text = out.getvalue()
    assert "ingest       read 20,000 rows x 14 columns" in text
    assert "ingest       ✓" in text
    assert "executor_input" not in text and '"inputs"' not in text
    assert view.failed == "train"
    assert view.error_lines == ["MemoryError: cannot allocate 12 GiB"]
    assert "train        ✗ MemoryError: cannot allocate 12 GiB" in text
    assert "register     – skipped" in text


def test_ctpipe_errors_are_collected_once() -> None:
    out = io.StringIO()
    view = ProgressView(out)
    view.write("Executing task 'validate'\n")
    view.write("    [ctpipe:validate] ERROR data validation failed against schema v1:\n")
    view.write(
        "    [ctpipe:validate] ERROR   - a.csv: column 'x', rule all_null: every value is null\n"
    )
    view.write("Task 'validate' finished with status FAILURE\n")
    assert view.failed == "validate"
    assert view.error_lines == [
        "data validation failed against schema v1:",
        "- a.csv: column 'x', rule all_null: every value is null",
    ]
