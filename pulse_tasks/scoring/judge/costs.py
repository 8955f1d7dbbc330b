"""Token prices of known judge models and dry-run token estimates."""

from __future__ import annotations

from typing import Any

# USD per 1M tokens (input, output), OpenAI list prices (openai.com/api/pricing). The gpt-4o,
# gpt-4o-mini, gpt-4.1 and gpt-4.1-mini rows were cross-checked on 2026-12-01 against several
# public 2026 price listings (the OpenAI page itself was out of reach); the dated snapshots carry
# their family's price except gpt-4o-2024-05-13, which kept its launch price. Azure list prices
# for the same snapshots are the same for global deployments.
PRICES_PER_M: dict[str, tuple[float, float]] = {
    "gpt-4o-2024-08-06": (2.50, 10.00),
    "gpt-4o-2024-11-20": (2.50, 10.00),
    "gpt-4o-2024-05-13": (5.00, 15.00),
    "gpt-4o": (2.50, 10.00),
    "gpt-4o-mini-2024-07-18": (0.15, 0.60),
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4.1-2025-04-14": (2.00, 8.00),
    "gpt-4.1": (2.00, 8.00),
    "gpt-4.1-mini-2025-04-14": (0.40, 1.60),
    "gpt-4.1-mini": (0.40, 1.60),
}
UNKNOWN = "unknown"  # cost of a model not in the table (e.g. a self-hosted open-weight judge)

# ~4 characters per token for English text with the GPT-4o tokenizer (o200k): good to +-20%.
CHARS_PER_TOKEN = 4.0
# Chat framing tokens per message (role markers), per the OpenAI cookbook's counting recipe.
TOKENS_PER_MESSAGE = 4
# A typical reply: three criteria, each with a one-or-two-sentence explanation.
EXPECTED_REPLY_TOKENS = 180


def price(model: str) -> tuple[float, float] | None:
    """(input, output) USD per 1M tokens, or None for a model not in the table."""
    return PRICES_PER_M.get(model)


def cost_usd(model: str, prompt_tokens: int, completion_tokens: int) -> float | str:
    """Estimated USD cost, or "unknown" for a model without a price."""
    p = price(model)
    if p is None:
        return UNKNOWN
    return round(prompt_tokens * p[0] / 1e6 + completion_tokens * p[1] / 1e6, 6)


def approx_prompt_tokens(messages: list[dict[str, str]]) -> int:
    """Rough prompt size of a chat request without a tokenizer (no network, no tiktoken)."""
    return sum(TOKENS_PER_MESSAGE + int(len(m["content"]) / CHARS_PER_TOKEN + 0.5) for m in messages) + 3


def summarize_estimate(model: str, calls: int, cached: int, prompt_tokens: int) -> dict[str, Any]:
    """Dry-run summary: calls still to make, tokens and cost."""
    completion = calls * EXPECTED_REPLY_TOKENS
    return {"model": model, "calls": calls, "cached": cached, "approx_prompt_tokens": prompt_tokens,
            "approx_completion_tokens": completion, "approx_cost_usd": cost_usd(model, prompt_tokens, completion)}
