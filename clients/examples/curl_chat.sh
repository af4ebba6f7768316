#!/usr/bin/env bash
# An image + text chat with curl only: the raw OpenAI-compatible HTTP API.
# Usage: MEDGEMMA_BASE_URL=http://127.0.0.1:8000/v1 MEDGEMMA_API_KEY=... ./curl_chat.sh chest.png
set -euo pipefail
BASE_URL=${MEDGEMMA_BASE_URL:-http://127.0.0.1:8000/v1}
AUTH="Authorization: Bearer ${MEDGEMMA_API_KEY:-EMPTY}"
IMAGE=${1:?usage: curl_chat.sh IMAGE.png}

# The served model: the first (usually only) id from /v1/models.
MODEL=${MEDGEMMA_MODEL:-$(curl -sf "$BASE_URL/models" -H "$AUTH" | grep -o '"id":"[^"]*"' | head -1 | cut -d'"' -f4)}

# The image travels inline as a data URL (PNG here; use image/jpeg for a JPEG).
B64=$(base64 -w0 "$IMAGE")
cat > /tmp/medgemma-request-$$.json <<JSON
{
  "model": "$MODEL",
  "max_tokens": 64,
  "temperature": 0,
  "messages": [
    {"role": "system", "content": "You are an expert radiologist."},
    {"role": "user", "content": [
      {"type": "text", "text": "Describe this X-ray"},
      {"type": "image_url", "image_url": {"url": "data:image/png;base64,$B64"}}
    ]}
  ]
}
JSON
trap 'rm -f /tmp/medgemma-request-$$.json' EXIT
curl -sS --fail-with-body "$BASE_URL/chat/completions" \
  -H "$AUTH" -H 'Content-Type: application/json' \
  -d @/tmp/medgemma-request-$$.json
echo
