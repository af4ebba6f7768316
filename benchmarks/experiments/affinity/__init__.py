"""The affinity experiment: follow-up TTFT and prefix-cache hits per vllm-router policy.

    python -m benchmarks affinity --scenario configs/scenarios/bench-affinity.yaml --rounds 3

The workload is a conversation about one image: the image with a first question, then three
follow-up questions, each sent with the whole conversation so far (the system prompt, the
image in the first user turn, every earlier answer), as clients/examples/multi_turn.py does
with the `interpret` task. A follow-up can reuse the KV cache of the turn before it only on
the replica that served that turn. round_robin spreads the turns of a conversation over the
replicas; cache_aware picks the replica whose router-side prefix tree matches the request's
text best (vllm-router keeps the text parts only, not the images); consistent_hash picks the
replica the conversation's key hashes to. Every request carries an `X-Session-ID` header
unique to its conversation: vllm-router 0.1.17's consistent_hash hashes the first of the
headers x-session-id, x-user-id, x-tenant-id, x-correlation-id, x-request-id, x-trace-id
that is set, else the body's session_params.session_id or `user` (src/policies/hash_key.rs
of vllm-project/router; the header names are in the installed binary too). The other
policies ignore the header.

The scenario's deployment must have a `replicas:` section. Its replicas are started once,
side by side, as `python -m serve` starts them (serve.launch.fleet's placement and start,
without supervision; each replica on a free port), then one vllm-router per policy over the
same replicas, each with the config's router settings and only `router.policy` changed
(serve.launch.router.Router, so the flags come from serve.command.replicas.router_argv). A
warm-up conversation goes through each router; then rounds alternate between the routers
(A B C A B C ...): each round is `--conversations` new conversations with new images
(distinct pixels, so no round is served from an earlier round's cache), `load.users` of them
in flight. Around each round every replica's /metrics is read: vLLM's
vllm:prefix_cache_queries and vllm:prefix_cache_hits (in tokens) and vllm:request_success;
their deltas give the round's hit rate and the requests each replica served.

Prints a row per round and policy, then per policy the median over the rounds and the hit
rates over all its rounds; writes results/<scenario>-<UTC time>/ with affinity.json (every
round with the machine's load average, the summary), records.jsonl (one line per request),
scenario.yaml, command.txt and the replicas' and routers' logs.

Modules: conversation (the turns and the driver that sends them), counters (each replica's
prefix-cache counters), figures (per round and per policy, pure), tables (their rendering),
fleet (replicas and a router per policy), run (the experiment), cli (`python -m benchmarks
affinity`).
"""
