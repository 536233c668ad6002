#!/bin/sh
# Regenerate the Python protobuf/gRPC modules of the StoreAPI from storeapi/proto/*.proto.
#
# Include layout: the .proto files import each other as "storeapi/<name>.proto" and protoc maps
# that virtual directory onto storeapi/proto with "-Istoreapi=<dir>". protoc derives both the
# output path and Python import statements from the virtual name, so with --python_out set to
# the repository root the generated modules land in storeapi/ and import each other as
# "from storeapi import labels_pb2" -- no hand edits of generated files. google/protobuf/*.proto
# (any, duration) come from the include dir bundled with grpcio-tools.
#
# Usage: storeapi/generate.sh   (PYTHON defaults to /work/venv/bin/python, else python3)
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
py=${PYTHON:-/work/venv/bin/python}
[ -x "$py" ] || py=python3
wkt=$("$py" -c 'import grpc_tools, os; print(os.path.join(os.path.dirname(grpc_tools.__file__), "_proto"))')

cd "$root"
rm -f storeapi/*_pb2.py storeapi/*_pb2.pyi storeapi/*_pb2_grpc.py
"$py" -m grpc_tools.protoc \
    "-I$wkt" \
    "-Istoreapi=$here/proto" \
    --python_out=. --pyi_out=. --grpc_python_out=. \
    storeapi/labels.proto storeapi/types.proto storeapi/prompb.proto storeapi/remote.proto \
    storeapi/rpc.proto storeapi/info.proto storeapi/hints.proto storeapi/metadata.proto \
    storeapi/rules.proto storeapi/exemplars.proto
# Only files that declare services get a useful *_pb2_grpc.py; drop the empty ones.
for f in labels types prompb remote hints; do rm -f "storeapi/${f}_pb2_grpc.py"; done
