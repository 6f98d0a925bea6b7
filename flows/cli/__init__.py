"""The `latent-atlas` command line: commands (main.py, train.py), flags generated from the configs (flags.py),
preflight checks.
"""
