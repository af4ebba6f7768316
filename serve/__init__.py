"""Serving MedGemma on vLLM: config/ (the deployment YAML), launch/ (one server), plan/
(capacity), render/ (clusters), guard/ (runs inside the server), standin/ (the test model)."""
