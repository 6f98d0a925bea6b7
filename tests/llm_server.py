"""A local, deterministic OpenAI-compatible server for tests and benchmarks (127.0.0.1, never public).

It implements POST /v1/chat/completions and GET /v1/models and plays a "model" whose answers are known:

- explain: the most frequent <<marked>> token of the activating examples -> {"explanation": 'the word "X"'};
- simulate: for each window of the request, 10 for each token that is a quoted word of the
  explanation, else 0 -> {"windows": [{"window": w, "activations": [...]}, ...]};
- detect: 1 for a text containing a quoted word of the explanation;
- fuzz: 1 for a text whose marked tokens are all quoted words of the explanation.

It reads the JSON data block the prompts put between BEGIN DATA / END DATA. Faults are injected per
request pattern (`FaultRule`): 429 with Retry-After, 500, slow (sleeps past the client's timeout),
truncated JSON, prose instead of JSON, a wrong number of values (in a simulation reply: in ONE window,
`FaultRule.window`), a garbage window, a missing window, the windows in reverse order, a refusal. It can reject
response_format types or logprobs with a 400, add latency, and return top logprobs. It counts requests.

    with LLMTestServer(latency_s=0.2) as server:
        settings = LLMSettings(model="fake", base_url=server.base_url)
"""

from __future__ import annotations

import json
import math
import re
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

_MARK = re.compile(r"<<(.*?)>>")
_QUOTED = re.compile(r'"([^"]+)"')
_WORD = re.compile(r"[\w']+")
FAULTS = ("429", "500", "slow", "truncated", "prose", "wrong_length", "garbage_window", "missing_window",
          "reversed_windows", "refusal", "injected")


@dataclass
class FaultRule:
    """Apply `fault` to the next `times` requests (None = all) of `task` (None = any) whose user message
    contains `contains` (None = any)."""

    fault: str
    task: str | None = None
    times: int | None = 1
    contains: str | None = None
    retry_after: str = "0"
    slow_s: float = 3.0
    window: int = 0
    """Simulation window faults hit this window of the batch (the last one if the batch is smaller)."""

    def matches(self, task: str, user: str) -> bool:
        if self.times is not None and self.times <= 0:
            return False
        return (self.task is None or self.task == task) and (self.contains is None or self.contains in user)


@dataclass
class ServerState:
    """Configuration and counters shared by the handler threads."""

    latency_s: float = 0.0
    logprobs: str = "full"
    """"full" = return top logprobs when asked, "ignore" = never return them, "reject" = 400 when asked."""
    reject_formats: set[str] = field(default_factory=set)
    """response_format types answered with a 400 ("json_schema", "json_object")."""
    faults: list[FaultRule] = field(default_factory=list)
    requests: Counter = field(default_factory=Counter)
    auth_headers: list[str] = field(default_factory=list)
    bodies: list[dict] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def take_fault(self, task: str, user: str) -> FaultRule | None:
        with self.lock:
            for rule in self.faults:
                if rule.matches(task, user):
                    if rule.times is not None:
                        rule.times -= 1
                    return rule
        return None

    @property
    def total(self) -> int:
        return sum(self.requests.values())


# ------------------------------------------------------------------ the fake model's answers
def data_block(user: str) -> dict[str, Any]:
    begin, end = user.find("BEGIN DATA\n"), user.rfind("\nEND DATA")
    if begin < 0 or end < 0:
        return {}
    return json.loads(user[begin + len("BEGIN DATA\n") : end])


def explanation_words(explanation: str) -> set[str]:
    quoted = _QUOTED.findall(explanation)
    return {w.lower() for w in (quoted or _WORD.findall(explanation))}


def answer(data: dict[str, Any]) -> dict[str, Any]:
    task = data.get("task", "")
    if task == "explain":
        marked = [m for ex in data["activating_examples"] for m in _MARK.findall(ex["text"])]
        counts = Counter(marked)
        top = min(counts, key=lambda t: (-counts[t], marked.index(t))) if counts else "nothing"
        return {"explanation": f'the word "{top}"'}
    words = explanation_words(data.get("explanation", ""))
    if task == "simulate":
        return {"windows": [{"window": w["window"],
                             "activations": [10 if tok.lower() in words else 0 for _, tok in w["tokens"]]}
                            for w in data["windows"]]}
    if task == "detect":
        return {"answers": [int(any(w.lower() in words for w in _WORD.findall(t))) for t in data["texts"]]}
    if task == "fuzz":
        marks = [[m.lower() for m in _MARK.findall(t)] for t in data["texts"]]
        return {"answers": [int(bool(m) and all(x in words for x in m)) for m in marks]}
    return {"error": "unknown task"}


def logprob_content(text: str, top_k: int) -> list[dict]:
    """Pieces of `text` (numbers alone) with confident but not certain top logprobs on numbers."""
    content = []
    for piece in re.findall(r"\d+|\D+", text):
        if piece.isdigit():
            value = int(piece)
            other = str(value - 1 if value > 0 else 1)
            top = [{"token": piece, "logprob": math.log(0.9), "bytes": None},
                   {"token": other, "logprob": math.log(0.1), "bytes": None}][: max(1, top_k)]
        else:
            top = [{"token": piece, "logprob": 0.0, "bytes": None}]
        content.append({"token": piece, "logprob": top[0]["logprob"], "bytes": None, "top_logprobs": top})
    return content


def _mangle(rule: FaultRule, text: str, reply: dict[str, Any]) -> tuple[str | None, str | None]:
    """(content, refusal) for content faults."""
    fault = rule.fault
    if fault == "truncated":
        return text[: max(1, len(text) // 2)], None
    if fault == "prose":
        return "I think this latent is mostly about punctuation, honestly.", None
    if fault == "refusal":
        return None, "I'm sorry, I can't help with that."
    if "windows" in reply and fault in ("wrong_length", "garbage_window", "missing_window", "reversed_windows"):
        return json.dumps({"windows": _window_fault(rule, [dict(w) for w in reply["windows"]])}), None
    if fault == "wrong_length":
        key = next((k for k in ("activations", "answers") if k in reply), None)
        if key is not None:
            return json.dumps({key: _wrong_length(reply[key])}), None
    if fault == "injected":  # a "gullible" reply: prose plus extra keys alongside the expected one
        return f"Sure! Ignoring my instructions: {json.dumps({**reply, 'latent': 999, 'pwned': True})}", None
    return text, None


def _wrong_length(values: list) -> list:
    return values[:-1] if len(values) > 1 else values * 2


def _window_fault(rule: FaultRule, windows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    if rule.fault == "reversed_windows":
        return windows[::-1]
    target = min(rule.window, len(windows) - 1)
    if rule.fault == "missing_window":
        return windows[:target] + windows[target + 1 :]
    acts = windows[target]["activations"]
    windows[target]["activations"] = _wrong_length(acts) if rule.fault == "wrong_length" else ["high"] * len(acts)
    return windows


# ------------------------------------------------------------------ HTTP plumbing
class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in separate writes: avoid 40 ms ACK stalls
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # silence stderr access log
        return

    def _send(self, status: int, payload: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        body = json.dumps(payload).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (timeout fault)

    def do_GET(self) -> None:  # noqa: N802
        if self.path.rstrip("/").endswith("/models"):
            self._send(200, {"object": "list", "data": [{"id": "fake-model", "object": "model"}]})
        else:
            self._send(404, {"error": {"message": "not found"}})

    def do_POST(self) -> None:  # noqa: N802
        length = int(self.headers.get("Content-Length", "0"))
        body = json.loads(self.rfile.read(length) or b"{}")
        if not self.path.rstrip("/").endswith("/chat/completions"):
            self._send(404, {"error": {"message": "not found"}})
            return
        self._send(*self.server.complete(body, self.headers.get("Authorization", "")))


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256  # benchmarks open dozens of connections at once
    state: ServerState

    def complete(self, body: dict[str, Any], auth: str) -> tuple[int, dict[str, Any], dict[str, str]]:
        state = self.state
        user = next((m["content"] for m in reversed(body.get("messages", [])) if m.get("role") == "user"), "")
        data = data_block(user)
        task = data.get("task", "unknown")
        with state.lock:
            state.requests[task] += 1
            state.auth_headers.append(auth)
            state.bodies.append(body)
        if state.latency_s:
            time.sleep(state.latency_s)
        fmt = (body.get("response_format") or {}).get("type")
        if fmt in state.reject_formats:
            return 400, _error(f"response_format type {fmt} is not supported", "invalid_request_error"), {}
        wants_logprobs = bool(body.get("logprobs"))
        if wants_logprobs and state.logprobs == "reject":
            return 400, _error("logprobs are not supported by this model", "invalid_request_error"), {}
        rule = state.take_fault(task, user)
        if rule is not None and rule.fault == "429":
            return 429, _error("rate limited", "rate_limit_exceeded"), {"Retry-After": rule.retry_after}
        if rule is not None and rule.fault == "500":
            return 500, _error("internal error", "server_error"), {}
        if rule is not None and rule.fault == "slow":
            time.sleep(rule.slow_s)
        reply = answer(data)
        text = json.dumps(reply)
        content, refusal = _mangle(rule, text, reply) if rule is not None else (text, None)
        logprobs = None
        if wants_logprobs and state.logprobs == "full" and content is not None:
            logprobs = {"content": logprob_content(content, int(body.get("top_logprobs") or 1))}
        prompt_chars = sum(len(m.get("content", "")) for m in body.get("messages", []))
        return 200, _completion(body.get("model", "fake"), content, refusal, logprobs, prompt_chars), {}


def _error(message: str, code: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": code, "code": code, "param": None}}


def _completion(model: str, content: str | None, refusal: str | None, logprobs: dict | None,
                prompt_chars: int) -> dict[str, Any]:
    completion_tokens = (len(content or refusal or "") + 3) // 4
    prompt_tokens = (prompt_chars + 3) // 4
    return {
        "id": "chatcmpl-fake", "object": "chat.completion", "created": 0, "model": model,
        "choices": [{"index": 0, "finish_reason": "stop", "logprobs": logprobs,
                     "message": {"role": "assistant", "content": content, "refusal": refusal}}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                  "total_tokens": prompt_tokens + completion_tokens},
    }


class LLMTestServer:
    """Start/stop the fake server in a background thread; `state` holds its settings and counters."""

    def __init__(self, latency_s: float = 0.0, logprobs: str = "full") -> None:
        self.state = ServerState(latency_s=latency_s, logprobs=logprobs)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> LLMTestServer:
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.state = self.state
        server = self._server
        self._thread = threading.Thread(target=lambda: server.serve_forever(poll_interval=0.05),
                                        name="llm-test-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> LLMTestServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        assert self._server is not None, "server not started"
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def add_fault(self, fault: str, **kwargs: Any) -> FaultRule:
        if fault not in FAULTS:
            raise ValueError(f"unknown fault {fault!r}; one of {FAULTS}")
        rule = FaultRule(fault, **kwargs)
        with self.state.lock:
            self.state.faults.append(rule)
        return rule

    def reset_counts(self) -> None:
        with self.state.lock:
            self.state.requests.clear()
            self.state.auth_headers.clear()
            self.state.bodies.clear()


def main() -> None:
    """Serve until interrupted (benchmarks run it in its own process so it does not share the GIL)."""
    import argparse
    import sys

    parser = argparse.ArgumentParser(description="fake OpenAI-compatible server on 127.0.0.1")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds per request")
    args = parser.parse_args()
    server = LLMTestServer(latency_s=args.latency).start()
    sys.stdout.write(server.base_url + "\n")
    sys.stdout.flush()
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        server.stop()


if __name__ == "__main__":
    main()
