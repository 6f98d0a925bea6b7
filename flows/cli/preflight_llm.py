"""Preflight of the LLM endpoint, for runs that will call it: a key is present where one is needed, and
one cheap request (GET /models, a short timeout, no retries) shows the server is reachable and accepts
it, before any data, SAE or cache is built. The key is never part of a message."""

from __future__ import annotations

import ipaddress
import os
from urllib.parse import urlparse

from explain.llm.settings import LLMSettings

PROBE_TIMEOUT_S = 5.0
"""Seconds the endpoint probe waits for an answer."""


def is_local(base_url: str | None) -> bool:
    """Whether an endpoint is on this machine or a private network (vLLM, Ollama ...), where servers
    usually need no key. None is OpenAI's public API."""
    if not base_url:
        return False
    host = urlparse(base_url).hostname or ""
    if host == "localhost" or "." not in host and ":" not in host:
        return True  # localhost or a bare cluster hostname (gpu-node-3)
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host.endswith((".local", ".localhost", ".internal"))
    return address.is_loopback or address.is_private or address.is_link_local


def check_llm_endpoint(settings: LLMSettings, timeout_s: float = PROBE_TIMEOUT_S) -> None:
    """Raise a one-line ValueError when the endpoint needs a key that is not set, cannot be reached,
    or refuses the key. A server without a models list (404) or one busy right now (429, 5xx) passes:
    it answered, and the run's own retries handle the rest."""
    import openai

    key = os.environ.get(settings.api_key_env, "")
    where = settings.base_url or "the OpenAI API"
    if not key and not is_local(settings.base_url):
        raise ValueError(f"no API key for {where}: set ${settings.api_key_env} (or name another variable with "
                         f"--llm-api-key-env)")
    api = openai.OpenAI(api_key=key or "no-key-needed", base_url=settings.base_url, timeout=timeout_s,
                        max_retries=0)
    try:
        api.models.list()
    except (openai.AuthenticationError, openai.PermissionDeniedError) as exc:
        raise ValueError(f"{where} refused the API key in ${settings.api_key_env} (HTTP {exc.status_code}); "
                         f"check the key") from None
    except openai.APIConnectionError as exc:
        reason = "timed out" if isinstance(exc, openai.APITimeoutError) else _cause(exc)
        raise ValueError(f"--llm-base-url {where}: unreachable ({reason}); start the server or fix the URL") from None
    except openai.APIStatusError:
        return
    finally:
        api.close()


def _cause(exc: BaseException) -> str:
    """The innermost cause's message (httpx's "[Errno 111] Connection refused"), never a header or key."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
