"""One module per pipeline stage: data, sae, latents, sampling, explain, score (and the run's LLM session)."""
