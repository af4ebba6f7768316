"""Runnable examples, one concept per file; tests/e2e/test_examples.py runs each one.

Run from the repository root: `python -m clients.examples.stream_findings IMAGE`, or
`bash clients/examples/curl_chat.sh IMAGE`, with MEDGEMMA_BASE_URL and MEDGEMMA_API_KEY set.
"""
