"""pytest glue for the pod lab: prints the before/after table in the test output."""

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import lab  # noqa: E402

# Extra podns flags for the "after" and "capture" runs (the base command lines are in lab.py:
# --listen 127.0.0.1:53 --upstream <cluster DNS> --metrics-listen 127.0.0.1:9153).
PODNS_ARGS = os.environ.get("PODNS_ARGS", "").split()


@pytest.fixture(scope="session")
def report():
    """The lab runs once per session (every phase, every client, every environment's cases, in
    parallel labs); test_lab.py and test_stub_model.py only read its results."""
    podns_bin = os.environ.get("PODNS_BIN",
                               os.path.join(lab.REPO, "target", "release", "podns"))
    try:
        rep = lab.run_all(lab.PHASES, lab.CLIENTS, lab.ALL_CASES, podns_bin, PODNS_ARGS)
    except lab.LabError as e:
        pytest.exit("pod lab cannot run: %s" % e, returncode=3)
    path = lab.write_report(rep)
    lab.LAST_REPORT.update(report=rep, path=path)
    return rep


@pytest.fixture(scope="session")
def rows(report):
    return {(r["phase"], r["client"], r["case"]): r for r in report["rows"]}


def pytest_configure(config):
    lab.install_signal_handlers()


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    report = lab.LAST_REPORT.get("report")
    if not report:
        return
    terminalreporter.section("pod lab: before (cluster DNS) / after (podns in the pod) / "
                             "capture (cluster DNS in resolv.conf, redirected to podns)")
    terminalreporter.write_line(lab.format_table(report))
    terminalreporter.write_line("report: %s  (lab run %.1f s)"
                                % (lab.LAST_REPORT.get("path"), report["duration_s"]))
