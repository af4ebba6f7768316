"""Request guard: the ASGI middleware that runs inside the vLLM server process."""
