"""Tables, plots and run reports."""

from crossres.report.tables import results_table, write_results

__all__ = ["results_table", "write_results"]
