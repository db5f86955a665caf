#!/usr/bin/env bash
# Build the athena-warm Lambda layer into deploy/build/layer/python (what template.yaml's
# AthenaWarmLayer points at). boto3/botocore/s3transfer are left out: the Python runtime has
# them. Usage: deploy/build_layer.sh [--local]   (--local: this machine's platform, for tests;
# default: manylinux x86_64 wheels for Python 3.12, as Lambda runs them). LAYER_DIR=path builds
# there instead of deploy/build/layer (the tests build under a temporary directory).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
layer=${LAYER_DIR:-$here/build/layer}
out="$layer/python"
rm -rf "$layer"
mkdir -p "$out"
pip=${PIP:-python3 -m pip}
wheels=$(mktemp -d)
trap 'rm -rf "$wheels"' EXIT
$pip wheel --quiet --no-deps -w "$wheels" "$root"   # athena-warm itself: pure Python
wheel=$(ls "$wheels"/athena_warm-*.whl)
if [ "${1:-}" = "--local" ]; then
  $pip install --quiet --target "$out" "$wheel[redis]"
else
  $pip install --quiet --target "$out" --platform manylinux2014_x86_64 --implementation cp \
    --python-version 3.12 --only-binary=:all: "$wheel[redis]"
fi
rm -rf "$out"/boto3 "$out"/botocore "$out"/s3transfer "$out"/boto3-* "$out"/botocore-* \
  "$out"/s3transfer-* "$out"/bin
find "$out" -name __pycache__ -type d -prune -exec rm -rf {} +
echo "layer: $(du -sh "$layer" | cut -f1) in $layer"
