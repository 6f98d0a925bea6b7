"""The `latent-atlas` command line: commands (main.py; the stage commands in stages.py, train.py, status.py,
schedule.py), flags generated from the configs (flags.py), preflight checks. docs/cli.md describes each.
"""
