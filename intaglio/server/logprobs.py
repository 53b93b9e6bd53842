"""Logprobs in OpenAI's two shapes: legacy completions (parallel lists) and chat (per token).

The engine gives, per token, a dict {token_id: logprob} whose first key is the chosen token,
followed by the top N. Token strings are each token decoded alone.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Any

LogprobEntry = dict[int, float]


class TokenStrings:
    """Decode single token ids, cached (logprob responses ask for the same ids again)."""

    def __init__(self, tokenizer: Any) -> None:
        self._decode = lru_cache(maxsize=65536)(
            lambda t: tokenizer.decode([t], skip_special_tokens=False)
        )

    def __call__(self, token_id: int) -> str:
        text: str = self._decode(token_id)
        return text


def completion_logprobs(
    token_ids: list[int],
    entries: list[LogprobEntry | None],
    strings: TokenStrings,
    text_offset: int = 0,
) -> dict[str, list[Any]]:
    """{"tokens", "token_logprobs", "top_logprobs", "text_offset"} for `token_ids`.

    `entries[i]` is None where no logprob exists (the first prompt token when echoing).
    """
    out: dict[str, list[Any]] = {
        "tokens": [],
        "token_logprobs": [],
        "top_logprobs": [],
        "text_offset": [],
    }
    offset = text_offset
    for token, entry in zip(token_ids, entries):
        text = strings(token)
        out["tokens"].append(text)
        out["text_offset"].append(offset)
        offset += len(text)
        if entry is None:
            out["token_logprobs"].append(None)
            out["top_logprobs"].append(None)
            continue
        out["token_logprobs"].append(_finite(entry[token]))
        out["top_logprobs"].append({strings(t): _finite(lp) for t, lp in entry.items()})
    return out


def chat_logprobs(
    token_ids: list[int], entries: list[LogprobEntry], top_n: int, strings: TokenStrings
) -> list[dict[str, Any]]:
    """The chat `logprobs.content` list: each token with its `top_n` most likely alternatives."""
    content = []
    for token, entry in zip(token_ids, entries):
        top = sorted(entry.items(), key=lambda kv: kv[1], reverse=True)[:top_n]
        content.append(
            {
                **_token_info(token, entry[token], strings),
                "top_logprobs": [_token_info(t, lp, strings) for t, lp in top],
            }
        )
    return content


def _token_info(token: int, logprob: float, strings: TokenStrings) -> dict[str, Any]:
    text = strings(token)
    return {"token": text, "logprob": _finite(logprob), "bytes": list(text.encode("utf-8"))}


def _finite(logprob: float) -> float:
    # JSON has no -Infinity; OpenAI-compatible servers report impossible tokens as -9999.
    return logprob if math.isfinite(logprob) else -9999.0
