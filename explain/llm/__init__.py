"""The OpenAI-compatible LLM client: transport, retries, cache, rate limits and budget, reply parsing, prompt
rendering, cost estimates.
"""
