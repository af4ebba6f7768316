"""Start one vLLM OpenAI server from a deployment config: argv, host CPU, process, restarts."""
