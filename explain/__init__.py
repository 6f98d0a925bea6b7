"""From SAE codes to explanations: latent records, the latent cache and statistics, example sampling, explainers,
the LLM client.
"""
