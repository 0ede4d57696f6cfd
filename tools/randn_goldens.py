"""Goldens for `TorchGenerator`: torch.randn(shape, generator=torch.Generator("cpu").manual_seed(s)).

Writes fixtures/goldens/randn.safetensors (relative to the repository root) when run as a script;
tools/make_fixtures.py imports this module and calls `write(out_dir)`.

Produced with torch 2.15.0 (+cu132 wheel, GCC 13.3 build) on an x86-64 CPU for which
`torch.backends.cpu.get_cpu_capability()` reported "AVX512". The "avx" cases were drawn twice, in
child processes with ATEN_CPU_CAPABILITY=avx2 and =avx512, and the script checks that both kernels
give identical bits (they do). The "libm"
cases were drawn with ATEN_CPU_CAPABILITY=default (scalar glibc logf/sinf/cosf).

Seeds: `manual_seed(s)` keeps the full 64-bit `s` as `initial_seed()` but MT19937 is seeded with
`s & 0xffffffff` only, so seed 2**32 + 7 draws the same numbers as seed 7 (the script asserts it).
Negative Python seeds are taken modulo 2**64.

File layout
-----------
Metadata key "randn_goldens" holds a JSON object: "torch_version" and "host_cpu_capability" record
the producing environment, and "cases" is a list; each case is
    {"name": "seed42_seq", "mode": "avx" | "libm", "seed": 42,
     "calls": [{"shape": [3]}, {"manual_seed": 7}, {"shape": [1, 4, 8, 8]}, ...]}
The k-th `{"shape": ...}` call of a case (k counts shape calls only, from 0) is the float32
tensor named "<name>/<k>" with that shape.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import tempfile

SEEDS = [0, 1, 42, 1234, 2**32 + 7, 0xFFFFFFFF]
# n < 16 takes torch's double-precision path, n >= 16 the blocked float path (with a re-drawn tail
# block when n % 16 != 0); shapes only matter through their element count.
SMALL_SHAPES = [[1], [2], [3], [7], [15], [16], [17], [31], [32], [33], [100], [1000], [1, 4, 8, 8]]
LATENT_SHAPE = [2, 4, 64, 64]


def _case(name: str, seed: int, calls: list, mode: str = "avx") -> dict:
    """`calls` holds shapes (lists) and re-seeds (ints), in order."""
    return {
        "name": name,
        "mode": mode,
        "seed": seed,
        "calls": [{"manual_seed": c} if isinstance(c, int) else {"shape": c} for c in calls],
    }


def _label(shape: list[int]) -> str:
    return "x".join(map(str, shape))


def _cases() -> list[dict]:
    cases = [_case(f"seed{seed}_n{_label(shape)}", seed, [shape]) for seed in SEEDS for shape in SMALL_SHAPES]
    # Full-size latent draws: many elements exercise every branch of the polynomials.
    cases += [_case(f"seed{seed}_latent", seed, [LATENT_SHAPE]) for seed in [0, 42, 1234]]
    cases.append(_case("seed1_n16005", 1, [[16005]]))
    # Successive calls continue one stream; the cached second normal of the n < 16 path survives an
    # n >= 16 call in between, and manual_seed drops it.
    cases += [
        _case("seed42_seq", 42, [[3], [20], [5], [16]]),
        _case("seed0_cache_across_block", 0, [[1], [16], [1], [1]]),
        _case("seed7_odd_small", 7, [[1], [1], [1], [2], [15], [17], [1, 3, 5, 7]]),
        _case("seed1234_latents", 1234, [[1, 4, 8, 8], [1, 4, 8, 8], [33], [1]]),
        _case("seed5_reseed", 5, [[1], 5, [1], [40], 2**32 + 9, [3]]),
    ]
    # ATEN_CPU_CAPABILITY=default (libm) mode.
    libm_shapes = [[1], [7], [16], [17], [100], [1000]]
    cases += [_case(f"libm_seed{s}_n{_label(shape)}", s, [shape], "libm") for s in [0, 42] for shape in libm_shapes]
    cases.append(_case("libm_seed0_latent", 0, [LATENT_SHAPE], "libm"))
    cases.append(_case("libm_seed42_seq", 42, [[3], [20], [5], [16]], "libm"))
    return cases


def _draw(cases: list[dict]) -> dict:
    """Runs the cases in this process (whatever CPU capability torch picked)."""
    import torch

    out = {}
    for case in cases:
        gen = torch.Generator("cpu").manual_seed(case["seed"])
        k = 0
        for call in case["calls"]:
            if "manual_seed" in call:
                gen.manual_seed(call["manual_seed"])
            else:
                out[f"{case['name']}/{k}"] = torch.randn(call["shape"], generator=gen, dtype=torch.float32)
                k += 1
    return out


UNSUPPORTED_CAPABILITY = 3


def _draw_with_capability(capability: str, cases: list[dict], required: bool = True) -> dict | None:
    """Runs the cases in a child process whose torch uses the given ATEN_CPU_CAPABILITY.

    Returns None when this CPU lacks the capability and `required` is False.
    """
    from safetensors.torch import load_file

    with tempfile.TemporaryDirectory() as tmp:
        cases_path = pathlib.Path(tmp) / "cases.json"
        out_path = pathlib.Path(tmp) / "out.safetensors"
        cases_path.write_text(json.dumps(cases))
        env = dict(os.environ, ATEN_CPU_CAPABILITY=capability)
        child = [sys.executable, __file__, "--draw", capability, str(cases_path), str(out_path)]
        returncode = subprocess.run(child, env=env).returncode
        if returncode == UNSUPPORTED_CAPABILITY and not required:
            return None
        if returncode != 0:
            raise SystemExit(f"drawing the {capability} goldens failed (exit status {returncode})")
        return load_file(out_path)


def _child_main(capability: str, cases_path: str, out_path: str) -> None:
    import torch
    from safetensors.torch import save_file

    reported = torch.backends.cpu.get_cpu_capability()
    if reported.lower() != capability.lower():
        print(f"asked torch for CPU capability {capability!r}, it runs {reported!r}", file=sys.stderr)
        sys.exit(UNSUPPORTED_CAPABILITY)
    save_file(_draw(json.loads(pathlib.Path(cases_path).read_text())), out_path)


def write(out_dir: pathlib.Path) -> pathlib.Path:
    """Writes out_dir/goldens/randn.safetensors (out_dir: the fixtures folder); returns its path."""
    import torch
    from safetensors.torch import save_file

    cases = _cases()
    avx_cases = [c for c in cases if c["mode"] == "avx"]
    libm_cases = [c for c in cases if c["mode"] == "libm"]

    tensors = _draw_with_capability("avx2", avx_cases)
    avx512 = _draw_with_capability("avx512", avx_cases, required=False)
    if avx512 is None:
        print("this CPU has no AVX-512: the AVX-512 kernel was not compared with the AVX2 one", file=sys.stderr)
    else:
        for name, t in tensors.items():
            if not torch.equal(t.view(torch.int32), avx512[name].view(torch.int32)):
                raise SystemExit(f"{name}: AVX2 and AVX-512 kernels disagree; the goldens would be ambiguous")
    tensors.update(_draw_with_capability("default", libm_cases))

    # manual_seed keeps only the low 32 bits for the engine.
    seed7 = _draw_with_capability("avx2", [_case(f"n{n}", 7, [[n]]) for n in [1, 100]])
    for n in [1, 100]:
        assert torch.equal(tensors[f"seed{2**32 + 7}_n{n}/0"], seed7[f"n{n}/0"]), "seed 2**32+7 differs from 7"

    # One metadata key: safetensors writes several keys in hash order, which would make the file
    # differ from run to run.
    description = {
        "torch_version": torch.__version__,
        "host_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cases": cases,
    }
    metadata = {"randn_goldens": json.dumps(description)}
    path = out_dir / "goldens" / "randn.safetensors"
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in sorted(tensors.items())}, str(path), metadata=metadata)
    return path


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--draw":
        _child_main(*sys.argv[2:])
    else:
        repo_root = pathlib.Path(__file__).resolve().parent.parent
        written = write(repo_root / "fixtures")
        print(f"wrote {written} ({written.stat().st_size} bytes)")
