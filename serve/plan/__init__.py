"""Capacity planning: model shapes, GPU specs, KV-cache arithmetic and roofline ceilings."""
