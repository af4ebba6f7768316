"""Deployment config: the pydantic models of a deployment YAML and how it is loaded."""
