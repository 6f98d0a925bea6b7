"""Inputs of an SAE: the corpus (corpus.py), the subject model's residual stream (subject.py), activation files,
content fingerprints.
"""
