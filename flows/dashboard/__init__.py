"""The served dashboard: `latent-atlas dashboard` (server.py)."""
