"""The MedGemma-architecture stand-in: random-weight Gemma 3 models built locally."""
