"""Tables, plots and run reports (the top layer: may import every other layer)."""

from crossres.report.run_report import build_report, compare_runs
from crossres.report.tables import results_table, write_results, write_scores

__all__ = ["build_report", "compare_runs", "results_table", "write_results", "write_scores"]
