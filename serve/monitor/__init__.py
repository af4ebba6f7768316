"""Monitoring a deployment: Prometheus' scrape configuration (pure) and the process."""
