"""The edge in front of a replicas deployment: nginx, the only listener on the config's
host and port, and the key check it asks (serve.edge.authz)."""
