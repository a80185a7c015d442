"""Convert MTCNN's weights from the facenet-pytorch wheel to ``bidsanon/data/mtcnn``.

The three state dicts (``facenet_pytorch/data/{pnet,rnet,onet}.pt``) are stored as
float32 ``.npz`` files, so that bidsanon loads them without unpickling anything and
without the wheel (which pins torch/torchvision releases that pull several GB of CUDA
libraries). Needs torch. Run once, from the project's root::

    pip download --no-deps facenet-pytorch==2.5.3 -d /tmp/fnp
    python scripts/convert_mtcnn_weights.py /tmp/fnp/facenet_pytorch-2.5.3-py3-none-any.whl
"""

from __future__ import annotations

import hashlib
import io
import sys
import zipfile
from pathlib import Path

import numpy as np
import torch

OUT = Path(__file__).resolve().parents[1] / "bidsanon" / "data" / "mtcnn"
NETS = ("pnet", "rnet", "onet")


def main(wheel: str) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheel) as zf:
        for net in NETS:
            raw = zf.read(f"facenet_pytorch/data/{net}.pt")
            state = torch.load(io.BytesIO(raw), weights_only=True, map_location="cpu")
            arrays = {k: v.numpy().astype(np.float32) for k, v in state.items()}
            np.savez(OUT / f"{net}.npz", **arrays)
            print(f"{net}: {len(arrays)} arrays, source sha256 "
                  f"{hashlib.sha256(raw).hexdigest()[:16]}")


if __name__ == "__main__":
    main(sys.argv[1])
