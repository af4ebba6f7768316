"""Render a deployment for a cluster: Ray and Kubernetes."""
