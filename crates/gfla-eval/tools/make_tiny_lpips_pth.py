#!/usr/bin/env python3
"""Writes the two tiny LPIPS weight files the gfla-eval loader test reads, in PyTorch's zip
checkpoint format, without needing PyTorch (only the standard library):

* crates/gfla-eval/tests/data/tiny_alexnet.pth: a torchvision-layout `alexnet` state dict
  (features.{0,3,6,8,10}.{weight,bias} plus one classifier entry) with every width divided by 16;
* crates/gfla-eval/tests/data/tiny_lpips_lin.pth: the LPIPS v0.1 `alex.pth` layout
  (lin{0..4}.model.1.weight, shape [1, C_k / 16, 1, 1]).

A stub `torch` module provides the two globals a checkpoint pickle refers to; the archive has the
layout torch.save writes (data.pkl, data/<storage>, version). Values are deterministic:
element i of the tensor with key K is sin(0.01 * i + len(K)).

Run from the repository root: python3 crates/gfla-eval/tools/make_tiny_lpips_pth.py
"""

import io
import math
import pickle
import struct
import sys
import types
import zipfile
from collections import OrderedDict

# (features index, output channels, kernel) of torchvision's AlexNet convolutions.
CONVS = [(0, 64, 11), (3, 192, 5), (6, 384, 3), (8, 256, 3), (10, 256, 3)]
DIVISOR = 16


def install_torch_stub():
    torch = types.ModuleType("torch")
    utils = types.ModuleType("torch._utils")

    class FloatStorage:
        pass

    def _rebuild_tensor_v2(*args):
        raise NotImplementedError

    _rebuild_tensor_v2.__module__ = "torch._utils"
    _rebuild_tensor_v2.__qualname__ = "_rebuild_tensor_v2"
    FloatStorage.__module__ = "torch"
    FloatStorage.__qualname__ = "FloatStorage"
    utils._rebuild_tensor_v2 = _rebuild_tensor_v2
    torch.FloatStorage = FloatStorage
    torch._utils = utils
    sys.modules["torch"] = torch
    sys.modules["torch._utils"] = utils


class Storage:
    def __init__(self, key, values):
        self.key = key
        self.values = values


class TensorRef:
    def __init__(self, storage, shape):
        self.storage = storage
        self.shape = shape

    def __reduce__(self):
        stride = []
        acc = 1
        for d in reversed(self.shape):
            stride.insert(0, acc)
            acc *= d
        return (
            sys.modules["torch._utils"]._rebuild_tensor_v2,
            (self.storage, 0, tuple(self.shape), tuple(stride), False, OrderedDict()),
        )


class Pickler(pickle.Pickler):
    def persistent_id(self, obj):
        if isinstance(obj, Storage):
            return ("storage", sys.modules["torch"].FloatStorage, obj.key, "cpu", len(obj.values))
        return None


def values_for(key, n):
    return [math.sin(0.01 * i + len(key)) for i in range(n)]


def write(out, entries):
    state = OrderedDict()
    storages = []
    for key, shape in entries:
        storage = Storage(str(len(storages)), values_for(key, math.prod(shape)))
        storages.append(storage)
        state[key] = TensorRef(storage, shape)
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as z:
        buf = io.BytesIO()
        Pickler(buf, protocol=2).dump(state)
        z.writestr("archive/data.pkl", buf.getvalue())
        for s in storages:
            z.writestr(f"archive/data/{s.key}", struct.pack(f"<{len(s.values)}f", *s.values))
        z.writestr("archive/version", "3\n")
    print(f"wrote {out}")


def main():
    install_torch_stub()
    alexnet = []
    lin = []
    cin = 3
    for k, (idx, c, kernel) in enumerate(CONVS):
        cout = c // DIVISOR
        alexnet.append((f"features.{idx}.weight", [cout, cin, kernel, kernel]))
        alexnet.append((f"features.{idx}.bias", [cout]))
        lin.append((f"lin{k}.model.1.weight", [1, cout, 1, 1]))
        cin = cout
    alexnet.append(("classifier.1.bias", [8]))
    write("crates/gfla-eval/tests/data/tiny_alexnet.pth", alexnet)
    write("crates/gfla-eval/tests/data/tiny_lpips_lin.pth", lin)


if __name__ == "__main__":
    main()
