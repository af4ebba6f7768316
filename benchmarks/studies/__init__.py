"""Studies built on the runner: baseline, profile, A/B, headroom, agreement, overload,
client cost."""
