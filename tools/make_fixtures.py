#!/usr/bin/env python3
"""Writes the reference fixtures under fixtures/: tiny random SD pipelines and golden outputs.

Run from the repository root with the pinned reference environment (tools/requirements.txt):

    python tools/make_fixtures.py            # everything
    python tools/make_fixtures.py --only pipelines

Everything is seeded; running it twice gives byte-identical files. See tools/README.md.
"""

import argparse
import importlib
import os
import pathlib
import sys

TOOLS_DIR = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, TOOLS_DIR)

# Each step writes one group of fixtures. Steps other than pipelines/randn/ldm are a module of
# fixturegen/ with write_goldens(out, goldens), imported only when the step runs (some need
# k-diffusion or other extras of tools/requirements.txt). Order matters where a step reads
# another's output (see README.md).
STEPS = (
    "pipelines",
    "tokenizer",
    "models",
    "schedulers",
    "generations",
    "randn",
    "ldm",
    "lora",
    "embeddings",
    "a1111",
    "philox",
    "safety",
    "lora_extract",
    "lycoris_tucker",
    "embeddings_legacy",
    "a1111_exact",
    "a1111_sde",
    "a1111_cfgpp",
    "mask_blur",
    "scheduler_classes",
    "hires",
    "dpmsolver_sde",
    "a1111_sde3m",
)

# Steps whose fixturegen module is named differently from the step.
STEP_MODULES = {"a1111": "a1111_samplers"}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=os.path.join(os.path.dirname(TOOLS_DIR), "fixtures"), help="fixtures folder")
    parser.add_argument("--only", choices=STEPS, action="append", help="run only these steps (repeatable)")
    args = parser.parse_args()
    out = os.path.abspath(args.out)
    steps = args.only or STEPS

    goldens = os.path.join(out, "goldens")
    for step in STEPS:
        if step not in steps:
            continue
        if step == "pipelines":
            from fixturegen import pipelines

            pipelines.write_pipelines(out)
        elif step == "randn":
            write_randn_goldens(out)
        elif step == "ldm":
            write_ldm_single_file(out)
        else:
            module = importlib.import_module("fixturegen." + STEP_MODULES.get(step, step))
            module.write_goldens(out, goldens)


def write_randn_goldens(out):
    """goldens/randn.safetensors comes from tools/randn_goldens.py (owned by the RNG work)."""
    try:
        import randn_goldens
    except ImportError:
        print("skipping goldens/randn.safetensors: tools/randn_goldens.py is not there yet")
        return
    randn_goldens.write(pathlib.Path(out))


def write_ldm_single_file(out):
    """The tiny-sd pipeline as one LDM-layout checkpoint, by tools/ldm_convert.py (weights work)."""
    try:
        import ldm_convert
    except ImportError:
        print("skipping ldm/tiny-sd.safetensors: tools/ldm_convert.py is not there yet")
        return
    os.makedirs(os.path.join(out, "ldm"), exist_ok=True)
    ldm_convert.write_single_file(os.path.join(out, "tiny-sd"), os.path.join(out, "ldm", "tiny-sd.safetensors"))


if __name__ == "__main__":
    main()
