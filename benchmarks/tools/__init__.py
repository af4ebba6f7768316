"""Tools the experiments start: a fake OpenAI endpoint and vLLM's own benchmark."""
