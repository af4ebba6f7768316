"""An image + text chat with the plain OpenAI SDK (no helper from this package).

MEDGEMMA_BASE_URL=http://127.0.0.1:8000/v1 MEDGEMMA_API_KEY=... python openai_sdk.py chest.png
"""

from __future__ import annotations

import base64
import os
import sys

import openai

image_path = sys.argv[1]
client = openai.OpenAI(
    base_url=os.environ.get("MEDGEMMA_BASE_URL", "http://127.0.0.1:8000/v1"),
    api_key=os.environ.get("MEDGEMMA_API_KEY", "EMPTY"),
)
image = base64.b64encode(open(image_path, "rb").read()).decode()  # noqa: SIM115

try:
    reply = client.chat.completions.create(
        model=client.models.list().data[0].id,  # the server's (only) model
        messages=[
            {"role": "system", "content": "You are an expert radiologist."},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Describe this X-ray"},
                    {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{image}"}},
                ],
            },
        ],
        max_tokens=64,
        temperature=0,
    )
except openai.APIConnectionError:
    sys.exit(f"cannot reach {client.base_url}: start the server with `make serve`")
except openai.APIStatusError as exc:
    sys.exit(f"the server answered {exc.status_code}: {exc.message}")

print(reply.choices[0].message.content)
print(reply.usage, file=sys.stderr)
