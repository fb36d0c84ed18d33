#!/usr/bin/env bash
# Region failover RTO benchmark on the running lab (make lab first): region_failover.yml against the
# seed's manual procedure, ROUNDS rounds each (default 3), the lab put back by region_failback.yml
# after every round. Results: bench/region/results-<date>.jsonl and .md (copy the table into docs/benchmarks.md).
set -euo pipefail
cd "$(dirname "$0")/../.."
rounds="${ROUNDS:-3}"
out="bench/region/results-$(date -u +%Y-%m-%d).jsonl"
.venv/bin/python bench/region/region.py "$rounds" "$out"
.venv/bin/python bench/region/region.py report "$out" > "${out%.jsonl}.md"
cat "${out%.jsonl}.md"
