#!/usr/bin/env bash
# Build the NATIX miner's pinned Python environment (natixnetwork/streetvision-subnet 28a1755:
# pyproject.toml + poetry.lock) with what our detector and the stock ViT detector need:
#   Python 3.11, transformers 4.45.2, timm 1.0.22, Pillow 10.4.0, safetensors 0.7.0, PyYAML 6.0.3,
#   numpy 2.2.6, huggingface-hub 0.36.0, tokenizers 0.20.3, torch 2.6.0, torchvision 0.21.0 (the lock's versions).
# MINER_WITH_BITTENSOR=1 adds bittensor 9.12.2 (the lock's): only needed to run the check against a real
# subnet checkout (ROADWORK_SUBNET, tests/miner_env_check.py), whose FeatureDetector imports bittensor;
# the check's own base_miner harness does not.
# Plus overlays with later transformers releases (tokenizers to match) for the stock-path test:
#   DEST/overlays/transformers-X/ (put first on PYTHONPATH to use one).
#
# torch: the lock's torch 2.6.0 / torchvision 0.21.0, installed here (not reused from another environment: the
# detector must load with the torch a miner really has). PyPI has no CPU-only torch wheel for linux x86_64, so these
# are the CUDA 12.4 builds with their nvidia-* wheels (~3 GB installed in all); they run on a machine without a GPU.
# MINER_TORCH=TORCH:TORCHVISION (default 2.6.0:0.21.0) installs another pair instead, to find the lowest torch the
# detector works with (2.3.1:0.18.1 is the lowest verified; 2.2.2 cannot use the lock's numpy 2.2.6).
#
# usage: scripts/miner_env.sh [DEST]      (default: .miner-venv; rebuilt from scratch)
set -euo pipefail
cd "$(dirname "$0")/.."
DEST=${1:-.miner-venv}
PYTHON=${MINER_PYTHON:-python3.11}
# transformers:tokenizers; 4.47.1: the last without TimmWrapper, 4.48.0: the first with it, 4.52.4: the last
# whose TimmWrapper ignores config.json's model_args, 4.53.0: the first that passes them to timm.create_model
OVERLAYS=${MINER_TRANSFORMERS_OVERLAYS:-"4.47.1:0.21.0 4.48.0:0.21.0 4.52.4:0.21.0 4.53.0:0.21.0"}
export MINER_TORCH=${MINER_TORCH:-2.6.0:0.21.0}
PINS=(transformers==4.45.2 timm==1.0.22 pillow==10.4.0 safetensors==0.7.0 pyyaml==6.0.3 numpy==2.2.6
      huggingface-hub==0.36.0 tokenizers==0.20.3 "torch==${MINER_TORCH%%:*}" "torchvision==${MINER_TORCH##*:}")
WITH_BITTENSOR=${MINER_WITH_BITTENSOR:-0}
# The subnet's FeatureDetector imports bittensor: the lock's release and its substrate client. Installed
# without its setuptools~=70 pin, which would make pip trade the pinned torch for an older one.
BITTENSOR=(bittensor==9.12.2 async-substrate-interface==1.5.12 bittensor-wallet==4.0.1 bittensor-drand==1.1.0)

rm -rf "$DEST"
"$PYTHON" -m venv "$DEST"
DEST=$(cd "$DEST" && pwd)
PY="$DEST/bin/python"

pipq() { "$PY" -m pip install -q --disable-pip-version-check "$@" 2> >(grep -v "^WARNING: Location" >&2); }
pipq "${PINS[@]}"
if [ "$WITH_BITTENSOR" = 1 ]; then
  pipq --no-deps "${BITTENSOR[@]}"
  mapfile -t BT_DEPS < <("$PY" - <<'PY'
import importlib.metadata as md
from packaging.requirements import Requirement
for name in ("bittensor", "async-substrate-interface", "bittensor-wallet", "bittensor-drand"):
    for text in md.distribution(name).requires or []:
        req = Requirement(text)
        if req.name.lower() != "setuptools" and (req.marker is None or req.marker.evaluate({"extra": ""})):
            print(text.split(";")[0])
PY
)
  pipq "${BT_DEPS[@]}" "${PINS[@]}"
fi

for pair in $OVERLAYS; do
  version=${pair%%:*} tokenizers=${pair##*:}
  pipq --no-deps --target "$DEST/overlays/transformers-$version" "transformers==$version" "tokenizers==$tokenizers"
done

# The pins must be in force; our own package must not be importable (PYTHONPATH aside: the
# check and the miner run without it).
env -u PYTHONPATH "$PY" - <<'PY'
import importlib.util, os, sys
import PIL, safetensors, timm, torch, torchvision, transformers, yaml
found = {"python": sys.version.split()[0], "transformers": transformers.__version__, "timm": timm.__version__,
         "pillow": PIL.__version__, "safetensors": safetensors.__version__, "pyyaml": yaml.__version__,
         "torch": torch.__version__, "torchvision": torchvision.__version__}
want = {"transformers": "4.45.2", "timm": "1.0.22", "pillow": "10.4.0", "safetensors": "0.7.0", "pyyaml": "6.0.3",
        **dict(zip(("torch", "torchvision"), os.environ["MINER_TORCH"].split(":")))}
if os.environ.get("MINER_WITH_BITTENSOR", "0") == "1":
    import bittensor
    found["bittensor"], want["bittensor"] = bittensor.__version__, "9.12.2"
print("miner env:", " ".join(f"{k}={v}" for k, v in found.items()))
bad = {k: (found[k], v) for k, v in want.items() if found[k].split("+")[0] != v}   # torch 2.6.0+cu124
if bad or not found["python"].startswith("3.11.") or importlib.util.find_spec("roadwork") is not None:
    sys.exit(f"miner_env: pins not in force: {bad}, python {found['python']}, "
             f"roadwork importable: {importlib.util.find_spec('roadwork') is not None}")
PY
