#!/usr/bin/env python3
"""Writes crates/gfla-model/tests/data/tiny_vgg19.pth: a torchvision-layout `vgg19` state dict
(features.{0,2,...,34}.{weight,bias} plus a classifier entry) with every width divided by 16, in
PyTorch's zip checkpoint format, without needing PyTorch.

A stub `torch` module provides the two globals a checkpoint pickle refers to; the archive has the
layout torch.save writes (data.pkl, data/<storage>, version). Values are deterministic:
element i of the tensor with key K is sin(0.01 * i + len(K)).

Run from the repository root: python3 tools/make_tiny_vgg_pth.py
"""

import math
import pickle
import struct
import sys
import types
import zipfile
from collections import OrderedDict

CHANNELS = [64, 64, 128, 128, 256, 256, 256, 256, 512, 512, 512, 512, 512, 512, 512, 512]
FEATURE_INDEX = [0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28, 30, 32, 34]
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
    return torch, utils


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


def main():
    install_torch_stub()
    state = OrderedDict()
    storages = []
    cin = 3
    for idx, c in zip(FEATURE_INDEX, CHANNELS):
        cout = c // DIVISOR
        for name, shape in (("weight", [cout, cin, 3, 3]), ("bias", [cout])):
            key = f"features.{idx}.{name}"
            n = math.prod(shape)
            storage = Storage(str(len(storages)), values_for(key, n))
            storages.append(storage)
            state[key] = TensorRef(storage, shape)
        cin = cout
    key = "classifier.0.bias"
    storage = Storage(str(len(storages)), values_for(key, 8))
    storages.append(storage)
    state[key] = TensorRef(storage, [8])

    out = "crates/gfla-model/tests/data/tiny_vgg19.pth"
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as z:
        import io

        buf = io.BytesIO()
        Pickler(buf, protocol=2).dump(state)
        z.writestr("archive/data.pkl", buf.getvalue())
        for s in storages:
            z.writestr(f"archive/data/{s.key}", struct.pack(f"<{len(s.values)}f", *s.values))
        z.writestr("archive/version", "3\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
