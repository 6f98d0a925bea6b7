"""The sparse latent cache (cache.py) and per-latent statistics in one streaming pass (stats.py)."""
