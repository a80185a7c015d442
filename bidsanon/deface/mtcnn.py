"""MTCNN face detection (Zhang et al. 2016) on the CPU with torch, without torchvision.

The cascade (proposal net on an image pyramid, refinement net, output net, each followed
by non-maximum suppression and box regression) follows facenet-pytorch's
``detect_face`` (MIT licence, Timothy Esler), with its weights: they are stored in
``bidsanon/data/mtcnn`` as ``.npz`` files (``scripts/convert_mtcnn_weights.py``; the
licence is next to them). facenet-pytorch itself is not used: its releases pin torch and
torchvision versions whose Linux wheels are CUDA builds of several GB, and torchvision
is needed only for its NMS, which is a few lines of numpy here. ``torch`` (any CPU
build) is the only extra dependency (extra ``bidsanon[mtcnn]``).

The results match facenet-pytorch 2.5.3's ``MTCNN.detect`` on the face battery's renders
(``tests/test_mtcnn.py`` holds the reference boxes it gave).
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

import numpy as np

WEIGHTS = Path(__file__).resolve().parents[1] / "data" / "mtcnn"
#: facenet-pytorch's defaults: the three stages' face-probability thresholds and the
#: image pyramid's scale step.
THRESHOLDS = (0.6, 0.7, 0.7)
FACTOR = 0.709
#: The proposal net's window (px) and stride.
CELL, STRIDE = 12, 2


def available() -> bool:
    """Whether torch can be imported and the weights are installed (torch not imported)."""
    return (importlib.util.find_spec("torch") is not None
            and all((WEIGHTS / f"{n}.npz").is_file() for n in ("pnet", "rnet", "onet")))


@functools.lru_cache(maxsize=1)
def _weights() -> dict:
    import torch

    out = {}
    for net in ("pnet", "rnet", "onet"):
        with np.load(WEIGHTS / f"{net}.npz") as z:
            out[net] = {k: torch.from_numpy(z[k]) for k in z.files}
    return out


def _conv(x, w: dict, name: str):
    import torch.nn.functional as F

    return F.prelu(F.conv2d(x, w[f"{name}.weight"], w[f"{name}.bias"]),
                   w[f"prelu{name[-1]}.weight"])


def _dense(x, w: dict, name: str):
    import torch.nn.functional as F

    return F.linear(x, w[f"{name}.weight"], w[f"{name}.bias"])


def pnet(x, w: dict):
    """Proposal net: (box regression, face probability) maps of a normalised image."""
    import torch.nn.functional as F

    x = F.max_pool2d(_conv(x, w, "conv1"), 2, 2, ceil_mode=True)
    x = _conv(_conv(x, w, "conv2"), w, "conv3")
    prob = F.softmax(F.conv2d(x, w["conv4_1.weight"], w["conv4_1.bias"]), dim=1)
    return F.conv2d(x, w["conv4_2.weight"], w["conv4_2.bias"]), prob


def rnet(x, w: dict):
    """Refinement net on 24 px crops: (box regression, face probability)."""
    import torch.nn.functional as F

    x = F.max_pool2d(_conv(x, w, "conv1"), 3, 2, ceil_mode=True)
    x = F.max_pool2d(_conv(x, w, "conv2"), 3, 2, ceil_mode=True)
    x = _conv(x, w, "conv3").permute(0, 3, 2, 1).reshape(x.shape[0], -1)
    x = F.prelu(_dense(x, w, "dense4"), w["prelu4.weight"])
    return _dense(x, w, "dense5_2"), F.softmax(_dense(x, w, "dense5_1"), dim=1)


def onet(x, w: dict):
    """Output net on 48 px crops: (box regression, face probability)."""
    import torch.nn.functional as F

    x = F.max_pool2d(_conv(x, w, "conv1"), 3, 2, ceil_mode=True)
    x = F.max_pool2d(_conv(x, w, "conv2"), 3, 2, ceil_mode=True)
    x = F.max_pool2d(_conv(x, w, "conv3"), 2, 2, ceil_mode=True)
    x = _conv(x, w, "conv4").permute(0, 3, 2, 1).reshape(x.shape[0], -1)
    x = F.prelu(_dense(x, w, "dense5"), w["prelu5.weight"])
    return _dense(x, w, "dense6_2"), F.softmax(_dense(x, w, "dense6_1"), dim=1)


def nms(boxes: np.ndarray, scores: np.ndarray, threshold: float,
        method: str = "union") -> np.ndarray:
    """Greedy non-maximum suppression: indices kept, best score first.

    ``union`` is torchvision's ``nms`` (overlap = intersection / union, areas without
    the +1 pixel); ``min`` is MTCNN's last stage (intersection / the smaller area, with
    +1 pixel areas).
    """
    if len(boxes) == 0:
        return np.zeros(0, dtype=np.int64)
    x1, y1, x2, y2 = (boxes[:, i].astype(np.float64) for i in range(4))
    plus = 1.0 if method == "min" else 0.0
    area = (x2 - x1 + plus) * (y2 - y1 + plus)
    order = np.argsort(-scores, kind="stable")
    keep = []
    while order.size:
        i, rest = order[0], order[1:]
        keep.append(i)
        w = np.maximum(0.0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]) + plus)
        h = np.maximum(0.0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]) + plus)
        inter = w * h
        if method == "min":
            overlap = inter / np.minimum(area[i], area[rest])
        else:
            overlap = inter / np.maximum(area[i] + area[rest] - inter, 1e-12)
        order = rest[overlap <= threshold]
    return np.asarray(keep, dtype=np.int64)


def _nms(boxes, threshold: float, method: str = "union"):
    import torch

    keep = nms(boxes[:, :4].numpy(), boxes[:, 4].numpy(), threshold, method)
    return torch.from_numpy(keep)


def _proposals(reg, prob, scale: float, threshold: float):
    """Boxes (x1, y1, x2, y2, score, 4 regressions) of the proposal net's windows."""
    import torch

    mask = prob[0, 1] >= threshold
    yx = mask.nonzero()
    bb = yx.to(reg.dtype).flip(1)
    q1 = ((STRIDE * bb + 1) / scale).floor()
    q2 = ((STRIDE * bb + CELL) / scale).floor()
    return torch.cat([q1, q2, prob[0, 1][mask].unsqueeze(1), reg[0][:, mask].T], dim=1)


def _square(boxes):
    """Boxes grown to squares about their centres."""
    import torch

    h = boxes[:, 3] - boxes[:, 1]
    w = boxes[:, 2] - boxes[:, 0]
    side = torch.maximum(w, h)
    boxes[:, 0] = boxes[:, 0] + w * 0.5 - side * 0.5
    boxes[:, 1] = boxes[:, 1] + h * 0.5 - side * 0.5
    boxes[:, 2:4] = boxes[:, :2] + side.unsqueeze(1)
    return boxes


def _regress(boxes, reg):
    """Boxes moved by the nets' regression (in units of the box's +1 pixel size)."""
    import torch

    w = boxes[:, 2] - boxes[:, 0] + 1
    h = boxes[:, 3] - boxes[:, 1] + 1
    boxes[:, :4] = boxes[:, :4] + reg[:, :4] * torch.stack([w, h, w, h], dim=1)
    return boxes


def _crops(img, boxes, size: int):
    """Each box's part of ``img`` (clipped to it) resampled to ``size`` px, normalised;
    and which boxes had one."""
    import torch
    import torch.nn.functional as F

    height, width = img.shape[2:]
    b = boxes[:, :4].trunc().int().numpy()
    x, y = np.maximum(b[:, 0], 1), np.maximum(b[:, 1], 1)
    ex, ey = np.minimum(b[:, 2], width), np.minimum(b[:, 3], height)
    ok = (ey > y - 1) & (ex > x - 1)
    data = [F.interpolate(img[:, :, y[k] - 1:ey[k], x[k] - 1:ex[k]], size=(size, size),
                          mode="area") for k in np.flatnonzero(ok)]
    return (torch.cat(data) - 127.5) * 0.0078125, torch.from_numpy(ok)


def detect(pic: np.ndarray, min_face: int = 20, thresholds: tuple[float, float, float]
           = THRESHOLDS, factor: float = FACTOR) -> np.ndarray:
    """Faces in a uint8 picture (grey ``(h, w)`` or RGB ``(h, w, 3)``).

    Parameters
    ----------
    pic : numpy.ndarray
        The picture.
    min_face : int
        Smallest face (px) looked for: the image pyramid starts where it fills the
        proposal net's 12 px window.
    thresholds : tuple of float
        Face probability each stage needs.
    factor : float
        Scale step of the pyramid.

    Returns
    -------
    numpy.ndarray
        ``(n, 5)``: x1, y1, x2, y2 (px) and the face probability of each face.
    """
    import torch
    import torch.nn.functional as F

    w = _weights()
    pic = np.asarray(pic, dtype=np.uint8)
    if pic.ndim == 2:
        pic = np.repeat(pic[..., None], 3, axis=2)
    img = torch.from_numpy(np.ascontiguousarray(pic.transpose(2, 0, 1))[None]).float()
    height, width = img.shape[2:]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # measured: 2 threads on a busy 2-core machine cost 4x CPU
    try:
        with torch.inference_mode():
            m = CELL / min_face
            scales, scale, side = [], m, min(height, width) * m
            while side >= CELL:
                scales.append(scale)
                scale, side = scale * factor, side * factor
            found = []
            for scale in scales:
                small = F.interpolate(img, size=(int(height * scale + 1),
                                                 int(width * scale + 1)), mode="area")
                reg, prob = pnet((small - 127.5) * 0.0078125, w["pnet"])
                boxes = _proposals(reg, prob, scale, thresholds[0])
                found.append(boxes[_nms(boxes, 0.5)])
            boxes = torch.cat(found) if found else torch.zeros(0, 9)
            boxes = boxes[_nms(boxes, 0.7)]
            if len(boxes):
                wh = (boxes[:, 2:4] - boxes[:, 0:2]).repeat(1, 2)
                boxes = torch.cat([boxes[:, :4] + boxes[:, 5:9] * wh, boxes[:, 4:5]], 1)
                boxes = _square(boxes)
            for stage, (name, net, size) in enumerate((("rnet", rnet, 24),
                                                        ("onet", onet, 48)), start=1):
                if not len(boxes):
                    break
                data, ok = _crops(img, boxes, size)
                boxes = boxes[ok]
                reg, prob = net(data, w[name])
                keep = prob[:, 1] > thresholds[stage]
                boxes = torch.cat([boxes[keep, :4], prob[keep, 1:2]], dim=1)
                reg = reg[keep]
                if name == "rnet":  # suppress, then regress and square for the next net
                    pick = _nms(boxes, 0.7)
                    boxes = _square(_regress(boxes[pick], reg[pick]))
                else:  # regress, then suppress by the smaller box's share
                    boxes = _regress(boxes, reg)
                    boxes = boxes[_nms(boxes, 0.7, "min")]
    finally:
        torch.set_num_threads(threads)
    return boxes.numpy().astype(np.float64).reshape(-1, 5)
