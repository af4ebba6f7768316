"""Thin Python clients for a MedGemma deployment served by vLLM's OpenAI-compatible API.

images.py and messages.py are pure (inputs -> OpenAI chat content); chat.py makes the
calls through the openai SDK; tasks.py holds the use-case presets; batch.py runs a folder
of studies resumably; __main__.py is the CLI (`python -m clients --help`).
"""
