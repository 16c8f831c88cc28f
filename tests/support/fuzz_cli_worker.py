"""Runs many command lines through ``smpc_synth.cli.main`` in one process, for the fuzz suite.

Usage: ``python tests/support/fuzz_cli_worker.py CASES.json RESULTS.json``. Each case is
``{"id", "argv"}``; each result holds the exit code, what reached stderr (the CLI's messages
and every log line), whether a traceback appeared, and this process's peak RSS after the
case. One process for all cases keeps the imports (torch, pandas) to one start-up.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import resource
import signal
import sys
import time

CASE_SECONDS = 120  # an input the CLI should refuse at once must not start real work


class CaseTimeout(BaseException):  # not an Exception: the CLI's last-resort handler lets it by
    pass


def _alarm(signum, frame):
    raise CaseTimeout(f"still running after {CASE_SECONDS} s")


class _CurrentStderr:
    """A stream that writes to whatever sys.stderr is now (logs land in each case's text)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def main() -> int:
    cases_path, results_path = sys.argv[1], sys.argv[2]
    logging.basicConfig(handlers=[logging.StreamHandler(_CurrentStderr())], level=logging.INFO)
    # what the commands import on first use, loaded before the clock and the memory baseline
    import smpc_synth.api
    import smpc_synth.eval
    import smpc_synth.models
    import smpc_synth.release
    import smpc_synth.runtime.party
    import smpc_synth.runtime.simulate  # noqa: F401
    from smpc_synth.cli import main as cli_main

    baseline = _peak_rss_mib()
    signal.signal(signal.SIGALRM, _alarm)

    results = []
    with open(cases_path, encoding="utf-8") as source:
        cases = json.load(source)
    for case in cases:
        captured_out, captured_err = io.StringIO(), io.StringIO()
        started = time.perf_counter()
        with contextlib.redirect_stdout(captured_out), contextlib.redirect_stderr(captured_err):
            signal.alarm(CASE_SECONDS)
            try:
                code = cli_main(case["argv"])
            except SystemExit as exc:  # argparse usage errors
                code = exc.code if isinstance(exc.code, int) else 1
            except CaseTimeout as exc:
                code = f"timeout: {exc}"
            except BaseException as exc:  # anything main() let through is a failure
                import traceback

                traceback.print_exc()
                code = f"raised {type(exc).__name__}"
            finally:
                signal.alarm(0)
        err = captured_err.getvalue()
        results.append(
            {
                "id": case["id"],
                "code": code,
                "stderr": err[-4000:],
                "traceback": "Traceback (most recent call last)" in err + captured_out.getvalue(),
                "seconds": time.perf_counter() - started,
                "peak_rss_mib": _peak_rss_mib(),
            }
        )
    with open(results_path, "w", encoding="utf-8") as sink:
        json.dump({"baseline_rss_mib": baseline, "cases": results}, sink)
    return 0


if __name__ == "__main__":
    sys.exit(main())
