"""pytest glue for the pod lab: prints the before/after table in the test output."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import lab  # noqa: E402


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
