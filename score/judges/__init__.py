"""Yes/no LLM judges (Paulo et al. 2024): detection and fuzzing, on shared machinery (base.py)."""
