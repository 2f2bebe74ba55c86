#!/usr/bin/env bash
# Run HERE, before a device call that trains on the GPU machine (scripts/gpu_train_detector.sh).
# That machine's own Python (3.12, torch, numpy, cv2, onnx, onnxruntime) has no ROS and no
# ultralytics, and nothing can be fetched there. This puts what the training needs beside the repo,
# in two folders git ignores, for the device tool's `carry`: ".whl" (wheels for Python 3.12) and
# ".rosmsgs" (the pure-Python parts of the message packages; their compiled parts are not needed
# until a message is serialized, which training never does). About 3 MB.
set -euo pipefail
cd "$(dirname "$0")/.."
make --no-print-directory venv
for folder in /.whl/ /.rosmsgs/; do
  grep -qxF "$folder" .git/info/exclude || echo "$folder" >> .git/info/exclude
done
version() { .venv/bin/python -c "import importlib.metadata as m; print(m.version('$1'))"; }
rm -rf .whl .rosmsgs
mkdir -p .whl .rosmsgs
.venv/bin/python -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 -d .whl \
  "ultralytics==$(version ultralytics)" "ultralytics-thop==$(version ultralytics-thop)" \
  "ultralytics-platform==$(version ultralytics-platform)" "onnxslim==$(version onnxslim)"
site=$(.venv/bin/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
for package in std_msgs sensor_msgs geometry_msgs nav_msgs visualization_msgs diagnostic_msgs \
               builtin_interfaces rosidl_parser; do
  (cd "$site" && find "$package" -name '*.py' -o -name '*.lark' -o -name py.typed) | while read -r file; do
    mkdir -p ".rosmsgs/$(dirname "$file")" && cp "$site/$file" ".rosmsgs/$file"
  done
done
du -sh .whl .rosmsgs
