#!/usr/bin/env bash
# The test command (README, `make test`, .ci/run): every test, slow model tests included.
# pytest's exit code 5 (no tests collected) counts as a failure.
#
# A full run (no arguments) then runs the person-counting tests again with OpenVINO forced to float32
# (SENSORIUM_OPENVINO_PRECISION=f32), as on a CPU without bfloat16 (AVX2 only): a machine with AVX-512 BF16
# or AMX runs them in bf16 in the first pass, and the counts must hold in both.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
bash scripts/setup.sh || exit 1
.venv/bin/ruff check . || exit 1
.venv/bin/python -m pytest -q -rs -p no:cacheprovider "$@"
rc=$?
if [ $rc -eq 5 ]; then
  echo "test: pytest collected no tests — that is a failure" >&2
  exit 1
fi
if [ $# -eq 0 ] && [ $rc -eq 0 ]; then
  echo "test: the counting tests again with OpenVINO in float32 (SENSORIUM_OPENVINO_PRECISION=f32)" >&2
  SENSORIUM_OPENVINO_PRECISION=f32 .venv/bin/python -m pytest -q -rs -p no:cacheprovider \
    tests/test_vision_regions.py tests/test_vision_detect.py \
    "tests/test_replay.py::test_labelled_session_every_stage_latency_and_accuracy"
  rc=$?
fi
exit $rc
