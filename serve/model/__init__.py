"""Gemma 3 model facts, shared by every layer: shapes (serve/model/hub_configs/ holds the
hub models'), the attention layer pattern, the stand-in presets, and Gemma 3's known
pitfalls. A leaf: it imports nothing from the project."""
