"""OpenAI- and Runware-compatible simulator: deterministic answers, latency, faults."""
