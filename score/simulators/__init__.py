"""Simulators behind one interface (base.py): predict a latent's activation per token from an explanation (N2G
patterns, LLM).
"""
