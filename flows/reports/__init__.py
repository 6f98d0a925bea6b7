"""Reports: the dashboard and one page per latent, as a static export (write.py) or served
(flows/dashboard/server.py) from the same views and templates (docs/dashboard.md); the CLI's score summary."""

from flows.reports.write import write_reports

__all__ = ["write_reports"]
