"""Experiments built on the runner: baseline, profile, A/B, headroom, agreement, overload,
client cost, router affinity, study prep, start-up probe, pan-and-scan, edge overhead."""
