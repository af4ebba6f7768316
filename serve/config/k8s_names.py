"""Kubernetes name and label syntax (as k8s.io/apimachinery validates it), for the config
fields that end up in rendered manifests: a bad name is one line at load, not an object the
API server refuses at `kubectl apply`.
"""

from __future__ import annotations

import re

# An RFC 1123 label: names of namespaces, Services, Secrets (a subset of what a Secret
# name may be: no dots, so every name here is also a valid DNS label of its own).
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
# A label's name part and a label value: at most 63 of letters, digits, '-', '_', '.'.
LABEL_NAME = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
# A label key's optional prefix: a DNS subdomain.
LABEL_PREFIX = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def dns_label(v: str | None) -> str | None:
    """`v` unchanged if it is a Kubernetes object name (or None); else ValueError."""
    if v is not None and (len(v) > 63 or not DNS_LABEL.match(v)):
        raise ValueError(
            f"{v!r} is not a Kubernetes name (lower-case letters, digits and '-', "
            "at most 63 characters, starting and ending with a letter or digit)"
        )
    return v


def label_value(v: str) -> str:
    """`v` unchanged if it is a label value; else ValueError."""
    if v and (len(v) > 63 or not LABEL_NAME.match(v)):
        raise ValueError(
            f"{v!r} is not a Kubernetes label value (letters, digits, '-', '_', '.'; "
            "at most 63 characters)"
        )
    return v


def labels(v: dict[str, str]) -> dict[str, str]:
    """`v` unchanged if every key and value is a Kubernetes label's; else ValueError."""
    for key, value in v.items():
        prefix, _, name = key.rpartition("/")
        if prefix and (len(prefix) > 253 or not LABEL_PREFIX.match(prefix)):
            raise ValueError(f"{key!r}: the part before '/' is not a DNS subdomain")
        if len(name) > 63 or not LABEL_NAME.match(name):
            raise ValueError(
                f"{key!r} is not a label key (letters, digits, '-', '_', '.'; at most 63)"
            )
        label_value(value)
    return v
