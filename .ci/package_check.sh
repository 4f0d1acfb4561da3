#!/usr/bin/env bash
# Packaging as users install it (`make package-check`): builds the sdist
# and, from it, the wheel (isolated, as `pip install git+...` does), checks
# that both carry the package's sources, installs the wheel with the [jax]
# extra into a clean venv (no system site-packages; torch must not come
# along) and runs the console script and a small real use there. Fails
# (non-zero) on any step; the temporary folder goes in every case.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
# The clean venv is about 3 GB in tens of thousands of files (TensorFlow,
# from keras-hub): on this machine's disk writing and deleting it took
# minutes, in memory (/dev/shm, where it has room) seconds.
shm_free_kb=$(df -Pk /dev/shm 2>/dev/null | awk 'NR == 2 {print $4}')
if [ "${shm_free_kb:-0}" -gt $((8 * 1024 * 1024)) ]; then
	tmp=$(mktemp -d -p /dev/shm keras_adalink_package.XXXXXX)
else
	tmp=$(mktemp -d)
fi
trap 'rm -rf "$tmp"' EXIT
fail() { echo "package-check: $*" >&2; exit 1; }
step() { echo "--- $* (at ${SECONDS} s)"; }

step "sdist, and the wheel built from it"
"$PY" -c 'import sys; from setuptools import build_meta as b; b.build_sdist(sys.argv[1])' \
	"$tmp/dist" >/dev/null
sdists=("$tmp"/dist/keras_adalink-*.tar.gz)
[ -f "${sdists[0]}" ] || fail "no sdist built"
sdist=${sdists[0]}
# From the sdist (unpacked in a temporary folder), not from the work tree:
# an in-tree build reuses build/lib, whose stale modules (one since turned
# into a package) would ship in the wheel; and the sdist is shown to build.
"$PY" -m pip wheel -q --no-deps "$sdist" -w "$tmp/dist"
wheels=("$tmp"/dist/keras_adalink-*-py3-none-any.whl)
[ -f "${wheels[0]}" ] || fail "no wheel built"
wheel=${wheels[0]}
echo "$(basename "$sdist") $(basename "$wheel")"

# The package's modules, no more and no fewer, in both (and what the sdist
# needs to build).
"$PY" - "$wheel" "$sdist" <<'EOF'
import pathlib, sys, tarfile, zipfile

sources = {p.as_posix() for p in pathlib.Path("keras_adalink").rglob("*.py")}
with zipfile.ZipFile(sys.argv[1]) as z:
    in_wheel = set(z.namelist())
with tarfile.open(sys.argv[2]) as t:
    # keras_adalink-VERSION/keras_adalink/... -> keras_adalink/...
    in_sdist = {n.split("/", 1)[1] for n in t.getnames() if "/" in n}
package_in_sdist = {n for n in in_sdist if n.startswith("keras_adalink/")}
problems = {
    "the wheel lacks": sources - in_wheel,
    "the wheel has modules not in the sources": {
        n for n in in_wheel if n.startswith("keras_adalink/")
    } - sources,
    "the sdist lacks": (sources | {"pyproject.toml", "README.md"}) - in_sdist,
    "the sdist has modules not in the sources": {
        n for n in package_in_sdist if n.endswith(".py")
    } - sources,
}
found = [f"{what}: {', '.join(sorted(n))}" for what, n in problems.items() if n]
if found:
    sys.exit("package-check: " + "; ".join(found))
print(f"{len(sources)} modules in the sdist and the wheel")
EOF

step "clean venv: pip install '$(basename "$wheel")[jax]'"
python3 -m venv "$tmp/venv"
# This machine's pip config lists a local index with gaps, which pip
# reports once per package: noise, filtered out.
"$tmp/venv/bin/python" -m pip install -q --no-compile "$wheel[jax]" \
	2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
if "$tmp/venv/bin/python" -m pip show -q torch >/dev/null 2>&1; then
	fail "the [jax] extra pulled torch"
fi

# Outside the repository, so that the installed package is the one used.
cd "$tmp"
export KERAS_BACKEND=jax HF_HUB_OFFLINE=1 KERAS_ADALINK_QUIET_START=1
unset PYTHONPATH
step "keras-adalink --help and a real use, in the clean venv"
help=$("$tmp/venv/bin/keras-adalink" --help) || fail "keras-adalink --help failed"
grep -q "usage: keras-adalink" <<<"$help" || fail "unexpected --help: $help"
echo "keras-adalink --help: ok"
"$tmp/venv/bin/python" - <<'EOF'
import sys

import keras, keras_hub, numpy as np
import keras_adalink

assert keras_adalink.__file__.startswith(sys.prefix), keras_adalink.__file__
layer = keras_adalink.AdaLink(rank=2)
assert tuple(layer(keras.ops.ones((1, 3, 8))).shape) == (1, 3, 8)
backbone = keras_hub.models.BertBackbone(
    vocabulary_size=16, num_layers=1, num_heads=2, hidden_dim=8,
    intermediate_dim=16, max_sequence_length=8)
model = keras_adalink.adapt(backbone, rank=2)
x = {"token_ids": np.ones((1, 4), "int32"),
     "segment_ids": np.zeros((1, 4), "int32"),
     "padding_mask": np.ones((1, 4), "int32")}
same = np.allclose(backbone(x)["sequence_output"], model(x)["sequence_output"])
assert same, "an inserted adapter must leave outputs unchanged"
path = "adapter.safetensors"  # in the temporary folder
keras_adalink.save_adapter(model, path)
keras_adalink.load_adapter(keras_adalink.adapt(backbone, rank=2), path)
print(f"import, AdaLink, adapt, save_adapter/load_adapter: ok "
      f"(keras {keras.__version__}, {keras.backend.backend()} backend)")
EOF
echo "package-check: ok (${SECONDS} s)"
