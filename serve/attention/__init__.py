"""Gemma 3's image mask on vLLM's CPU attention backend, as a vLLM general plugin.

Gemma 3 attends bidirectionally within each image and causally everywhere else; vLLM 0.32's
CPU backend attends causally over everything (docs/fidelity.md). `plugin` is the entry point
vLLM loads in each of its processes; `backend` is the attention backend it installs;
`spans` is the pure arithmetic of which rows of a step attend both ways; `support` says,
without importing vLLM, whether the plugin is active for the installed vLLM.
"""
