#!/usr/bin/env bash
# Peak resident memory of `kiln generate` for 100 and for 2000 new tokens on one model: decoding
# carries a fixed-size state, so the two should match (growth is a leak).
#   usage: benches/generation_memory.sh MODEL_DIR [PROMPT_IDS]
set -euo pipefail
model=${1:?usage: benches/generation_memory.sh MODEL_DIR [PROMPT_IDS]}
prompt=${2:-1,2,3}
cd "$(dirname "$0")/.."
cargo build -q --release --bin kiln
for n in 100 2000; do
  /usr/bin/time -f "new tokens $n: peak RSS %M KiB, %e s" \
    ./target/release/kiln generate "$model" --tokens "$prompt" --max-new "$n" --ignore-eos --ids > /dev/null
done
