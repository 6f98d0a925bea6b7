"""HTML reports: the dashboard and one page per latent (write.py), and the CLI's score summary."""

from flows.reports.write import write_reports

__all__ = ["write_reports"]
