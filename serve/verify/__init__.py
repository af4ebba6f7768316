"""`python -m serve verify`: the served answers equal transformers' on the same weights.

prompts (the fixed prompt set), served (ask the running server), reference (transformers'
Gemma3ForConditionalGeneration on the same folder), compare (pure: vLLM's
check_logprobs_close rule plus a logprob tolerance), cli (the command).
"""
