"""Tools the studies start: a fake OpenAI endpoint and vLLM's own benchmark."""
