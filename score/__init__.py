"""Scoring explanations behind one interface (base.py): simulation (simulators/) and LLM judges (judges/), metrics,
baselines.
"""
