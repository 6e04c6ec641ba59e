"""Run many `aediff` command lines in this one process, through the entry point a user's shell runs
(``aediff.cli.main``), one after another, each in its own working folder:

    python tests/cli_batch.py CASES.json RESULTS.json

CASES.json: a list of {"argv": [...], "cwd": "..."}. RESULTS.json: a list of {"returncode", "stdout", "stderr"}
in the same order. An exception that escapes ``main`` (it never should: main turns every one into a line)
is written to that case's stderr with its traceback, so the test sees it. The interpreter and torch start
once for the whole batch rather than once per case, which was most of the bad-input test's time.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
import traceback


def run_one(argv: list[str], cwd: str) -> dict:
    from aediff.cli import main

    out, err = io.StringIO(), io.StringIO()
    code = 0
    os.chdir(cwd)
    sys.argv = ["aediff", *argv]
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main()
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except BaseException:  # noqa: BLE001 - a bug in main's handling: show it as the subprocess would
            traceback.print_exc()
            code = 1
    return {"returncode": code, "stdout": out.getvalue(), "stderr": err.getvalue()}


def main() -> None:
    cases_file, results_file = sys.argv[1:3]
    with open(cases_file) as f:
        cases = json.load(f)
    results = [run_one(case["argv"], case["cwd"]) for case in cases]
    with open(results_file, "w") as f:
        json.dump(results, f)


if __name__ == "__main__":
    main()
