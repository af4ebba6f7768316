"""The interpretation assistant: a conversation about one study, with patient history.

python -m clients.examples.multi_turn chest.png
"""

from __future__ import annotations

import sys

from clients.chat import MedGemmaClient
from clients.messages import assistant_turn, user_turn

client = MedGemmaClient()
history = "58-year-old, fever and productive cough for 5 days"
turns: list[dict] = []

questions = [("What do you see?", [sys.argv[1]]), ("Could this be pneumonia?", [])]
for question, images in questions:
    result = client.run_task(
        "interpret",
        images,
        question=question,
        patient_history=history,
        turns=turns,
        max_tokens=48,
    )
    print(f"> {question}\n{result.text}\n")
    turns += [user_turn(question, images), assistant_turn(result.text)]
