"""Textual-inversion files in torch's legacy (pre-1.6) serialisation (issue 13). Run with
`make_fixtures.py --only embeddings_legacy` after the `embeddings` step.

  fixtures/embeddings/legacy/tiny-sd/nested/trio.pt
      embeddings.py's tiny-sd trio.pt (the A1111 dict: string_to_token, string_to_param {"*": [3, w]},
      name, step, ...) loaded by torch and saved again with
      torch.save(..., _use_new_zipfile_serialization=False), one folder down (an --embedding-dir
      walk must find it). Its vectors are trio.pt's, bit for bit (checked here).
  fixtures/embeddings/legacy/os_system.pt
      the legacy layout (magic, version 1001, sys_info, object, storage keys) whose object pickle
      calls os.system("echo pwned"); torch.load(weights_only=True) refuses it (checked here).
"""

import io
import os
import pickle
import sys

import torch

from .embeddings import RunsASystemCommand

MAGIC = 0x1950A86A20F9469CFC6C
VERSION = 1001


def write_goldens(fixtures_dir, goldens_dir):
    del goldens_dir  # the expected values are the zip trio.pt's own
    out = os.path.join(fixtures_dir, "embeddings", "legacy")
    nested = os.path.join(out, "tiny-sd", "nested")
    os.makedirs(nested, exist_ok=True)

    source = torch.load(os.path.join(fixtures_dir, "embeddings", "tiny-sd", "trio.pt"), weights_only=True)
    path = os.path.join(nested, "trio.pt")
    torch.save(source, path, _use_new_zipfile_serialization=False)
    with open(path, "rb") as f:
        if f.read(2) != b"\x80\x02":
            raise RuntimeError("the legacy file does not start with a protocol-2 pickle")
    again = torch.load(path, weights_only=True)
    if not torch.equal(again["string_to_param"]["*"], source["string_to_param"]["*"]):
        raise RuntimeError("legacy trio.pt does not read back as trio.pt")

    evil = io.BytesIO()
    for value in (MAGIC, VERSION, {"protocol_version": VERSION, "little_endian": sys.byteorder == "little",
                                   "type_sizes": {"short": 2, "int": 4, "long": 4}}):
        pickle.dump(value, evil, protocol=2)
    evil.write(pickle.dumps(RunsASystemCommand(), protocol=2).replace(b"cposix\n", b"cos\n"))
    pickle.dump([], evil, protocol=2)
    bad = os.path.join(out, "os_system.pt")
    with open(bad, "wb") as f:
        f.write(evil.getvalue())
    try:
        torch.load(bad, weights_only=True)
        raise RuntimeError("torch loads legacy os_system.pt with weights_only=True")
    except pickle.UnpicklingError:
        pass
    print(f"embeddings_legacy: {path}, {bad}")
