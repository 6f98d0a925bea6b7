"""Explainers behind one interface (base.py): the N2G n-gram explainer and the LLM explainer."""
