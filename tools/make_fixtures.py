#!/usr/bin/env python3
"""Writes the reference fixtures under fixtures/: tiny random SD pipelines and golden outputs.

Run from the repository root with the pinned reference environment (tools/requirements.txt):

    python tools/make_fixtures.py            # everything
    python tools/make_fixtures.py --only pipelines

Everything is seeded; running it twice gives byte-identical files. See tools/README.md.
"""

import argparse
import os
import pathlib
import sys

TOOLS_DIR = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, TOOLS_DIR)

STEPS = ("pipelines", "tokenizer", "models", "schedulers", "generations", "randn", "ldm", "lora", "embeddings", "a1111", "philox", "safety", "hires")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=os.path.join(os.path.dirname(TOOLS_DIR), "fixtures"), help="fixtures folder")
    parser.add_argument("--only", choices=STEPS, action="append", help="run only these steps (repeatable)")
    args = parser.parse_args()
    out = os.path.abspath(args.out)
    steps = args.only or STEPS

    # Imported late so --help works without the reference environment.
    from fixturegen import embeddings, generations, lora, models, pipelines, safety, schedulers, tokenizer

    goldens = os.path.join(out, "goldens")
    if "pipelines" in steps:
        pipelines.write_pipelines(out)
    if "tokenizer" in steps:
        tokenizer.write_goldens(out, goldens)
    if "models" in steps:
        models.write_goldens(out, goldens)
    if "schedulers" in steps:
        schedulers.write_goldens(out, goldens)
    if "generations" in steps:
        generations.write_goldens(out, goldens)
    if "randn" in steps:
        write_randn_goldens(out)
    if "ldm" in steps:
        write_ldm_single_file(out)
    if "lora" in steps:
        lora.write_goldens(out, goldens)
    if "hires" in steps:
        from fixturegen import hires

        hires.write_goldens(out, goldens)
    from fixturegen import embeddings, generations, lora, models, pipelines, safety, schedulers, tokenizer


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
