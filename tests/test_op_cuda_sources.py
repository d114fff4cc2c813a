"""The CUDA extension's sources (lthfast/ops/kernels/<op>/cuda.cu and cuda_binding.cpp for
masked_sgd and magnitude_prune, csrc/cuda_module.cpp) compile, and where a GPU is visible
the built extension lthfast._cuda agrees with pure-torch references.

setup.py builds the CUDA extension only where CUDA is wanted, so on CPU-only machines these
compile checks are what keeps the sources from rotting. Each test skips without nvcc.
"""
import os
import re
import shutil
import subprocess
import sysconfig
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
OPS = ROOT / "lthfast" / "ops" / "kernels"
KERNELS = [OPS / "masked_sgd" / "cuda.cu", OPS / "magnitude_prune" / "cuda.cu"]
BINDINGS = [ROOT / "csrc" / "cuda_module.cpp", OPS / "masked_sgd" / "cuda_binding.cpp",
            OPS / "magnitude_prune" / "cuda_binding.cpp"]

NVCC = shutil.which("nvcc")
needs_nvcc = pytest.mark.skipif(NVCC is None, reason="nvcc (the CUDA toolkit) is not on PATH")


def _cuda_home():
    """The CUDA toolkit folder: the one holding include/cuda_runtime.h.

    CUDA_HOME / CUDA_PATH win when set; otherwise nvcc says where it lives (`--dryrun` prints
    its real bin folder even when the nvcc on PATH is a wrapper script elsewhere, where
    dirname(dirname(nvcc)) - torch's own guess - names the wrong folder).
    """
    candidates = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH")]
    if NVCC is not None:
        try:
            out = subprocess.run([NVCC, "--dryrun", "-c", "-x", "cu", os.devnull, "-o", os.devnull],
                                 capture_output=True, text=True, timeout=60)
            here = re.search(r"^#\$ _HERE_=(.+)$", out.stdout + out.stderr, re.MULTILINE)
            if here:
                candidates.append(os.path.dirname(here.group(1).strip()))
        except (OSError, subprocess.SubprocessError):
            pass
        candidates.append(os.path.dirname(os.path.dirname(os.path.realpath(NVCC))))
    candidates.append("/usr/local/cuda")
    for home in candidates:
        if home and os.path.isfile(os.path.join(home, "include", "cuda_runtime.h")):
            return os.path.realpath(home)
    return None


def _run(cmd, timeout):
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=timeout)
    assert result.returncode == 0, (
        f"command failed ({result.returncode}): {' '.join(map(str, cmd))}\n"
        f"--- stdout ---\n{result.stdout}\n--- stderr ---\n{result.stderr}")


def test_setup_builds_every_cuda_source():
    """setup.py's globs find exactly these sources (a renamed file would silently drop out)."""
    found = sorted(OPS.glob("*/cuda.cu")) + sorted(OPS.glob("*/cuda_binding.cpp"))
    assert found == sorted(KERNELS) + sorted(BINDINGS[1:])


@needs_nvcc
@pytest.mark.parametrize("kernels", KERNELS, ids=lambda path: path.parent.name)
def test_kernels_compile_with_nvcc(tmp_path, kernels):
    # The .cu includes no torch headers: a few seconds for one architecture.
    _run([NVCC, "-c", "-O3", "-std=c++17", "-arch=sm_90", "-o", str(tmp_path / "k.o"), str(kernels)],
         timeout=300)
    assert (tmp_path / "k.o").stat().st_size > 0


@needs_nvcc
@pytest.mark.parametrize("binding", BINDINGS, ids=lambda path: f"{path.parent.name}/{path.name}")
def test_binding_compiles_against_torch(binding):
    # Syntax and type checks of the torch binding with the host compiler (no code generation):
    # tens of seconds, almost all of it parsing torch's headers.
    from torch.utils import cpp_extension

    cuda_home = _cuda_home()
    if cuda_home is None:
        pytest.skip("nvcc found, but no CUDA toolkit folder with include/cuda_runtime.h")
    # Torch's own include folders only: its CUDA include guess can be wrong (see _cuda_home),
    # so the toolkit's include folder is added from _cuda_home.
    includes = cpp_extension.include_paths() + [
        sysconfig.get_paths()["include"],
        os.path.join(cuda_home, "include"),
    ]
    abi = int(getattr(torch._C, "_GLIBCXX_USE_CXX11_ABI", True))
    _run([os.environ.get("CXX", "c++"), "-fsyntax-only", "-std=c++20",
          *(f"-I{path}" for path in includes),
          "-DTORCH_EXTENSION_NAME=_cuda", "-DTORCH_API_INCLUDE_EXTENSION_H",
          f"-D_GLIBCXX_USE_CXX11_ABI={abi}", str(binding)],
         timeout=600)


# ----------------------------------------------------------------------------- on a GPU


def build_cuda_extension(folder: Path):
    """lthfast._cuda's sources built by cpp_extension.load as `lthfast_cuda_test`. load() names
    objects by file name alone, and every op has a cuda.cu and a cuda_binding.cpp: each is
    compiled through a uniquely named file in `folder` that #includes it (its own relative
    includes still resolve beside it)."""
    from torch.utils import cpp_extension

    home = _cuda_home()
    if home is not None and home != cpp_extension.CUDA_HOME:
        os.environ.setdefault("CUDA_HOME", home)
        cpp_extension.CUDA_HOME = home  # read when load() builds, set once at import
    sources = []
    for path in BINDINGS + KERNELS:
        unique = folder / f"{path.parent.name}_{path.name}"
        unique.write_text(f'#include "{path}"\n')
        sources.append(str(unique))
    return cpp_extension.load(name="lthfast_cuda_test", sources=sources, extra_cflags=["-O3"],
                              extra_cuda_cflags=["-O3"], verbose=False)


@pytest.fixture(scope="module")
def cuda_ext(tmp_path_factory):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device: the kernels are only compile-checked")
    if NVCC is None:
        pytest.skip("nvcc (the CUDA toolkit) is not on PATH")
    return build_cuda_extension(tmp_path_factory.mktemp("cuda_sources"))


SIZES = [0, 1, 7, 1025, 100003]


def _sgd_ref(p, g, b, keep, lr, m, wd, nesterov):
    d = g + wd * p
    b = m * b + d
    step = d + m * b if nesterov else b
    p = p - lr * step
    return torch.where(keep, p, 0), torch.where(keep, b, 0)


def _flat(values, offset):
    """A contiguous 1-D copy of `values`, starting `offset` elements into its storage (offset 1
    makes it misaligned for vector access, which sends the kernel down its scalar path)."""
    storage = torch.empty(values.numel() + offset, dtype=values.dtype, device=values.device)
    view = storage[offset:]
    view.copy_(values)
    return view


@pytest.mark.parametrize("offset", [0, 1])
@pytest.mark.parametrize("nesterov", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("n", SIZES)
def test_masked_sgd_matches_reference(cuda_ext, n, dtype, nesterov, offset):
    gen = torch.Generator(device="cuda").manual_seed(n + 17 * offset + 3 * nesterov)
    p = torch.randn(n, device="cuda", generator=gen).to(dtype)
    g = torch.randn(n, device="cuda", generator=gen).to(dtype)
    b = torch.randn(n, device="cuda", generator=gen).to(dtype)
    keep = torch.rand(n, device="cuda", generator=gen) < 0.3
    if n >= 7:  # pruned entries holding NaN/inf must still come out exactly 0
        pruned = (~keep).nonzero().flatten()[:3]
        g[pruned] = float("nan")
        p[pruned[:1]] = float("inf")
    lr, m, wd = 0.1, 0.9, 5e-4
    # The kernel computes in float32 whatever the storage type; so does the reference.
    want_p, want_b = _sgd_ref(p.float(), g.float(), b.float(), keep, lr, m, wd, nesterov)

    pp, gg, bb = _flat(p, offset), _flat(g, offset), _flat(b, offset)
    kk = _flat(keep.view(torch.uint8), offset)
    cuda_ext.masked_sgd_(pp, gg, bb, kk, lr, m, wd, nesterov)
    torch.cuda.synchronize()

    tol = dict(rtol=1e-6, atol=1e-6) if dtype == torch.float32 else dict(rtol=1.6e-2, atol=1e-2)
    torch.testing.assert_close(pp, want_p.to(dtype), **tol)
    torch.testing.assert_close(bb, want_b.to(dtype), **tol)
    torch.testing.assert_close(gg, g, rtol=0, atol=0, equal_nan=True)  # grads untouched
    assert not pp[~keep].any() and not bb[~keep].any()


def test_masked_sgd_rejects_bad_inputs(cuda_ext):
    x = torch.zeros(8, device="cuda")
    keep = torch.ones(8, dtype=torch.uint8, device="cuda")
    with pytest.raises(RuntimeError, match="CUDA"):
        cuda_ext.masked_sgd_(x.cpu(), x, x.clone(), keep, 0.1, 0.9, 0.0, False)
    with pytest.raises(RuntimeError, match="entries"):
        cuda_ext.masked_sgd_(x, x[:4].clone(), x.clone(), keep, 0.1, 0.9, 0.0, False)
    with pytest.raises(RuntimeError, match="dtype"):
        cuda_ext.masked_sgd_(x, x.clone(), x.double(), keep, 0.1, 0.9, 0.0, False)
    with pytest.raises(RuntimeError, match="contiguous"):
        cuda_ext.masked_sgd_(torch.zeros(16, device="cuda")[::2], x.clone(), x.clone(), keep, 0.1, 0.9, 0.0, False)


@pytest.mark.parametrize("offset", [0, 1])
@pytest.mark.parametrize("nesterov", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("members,segment", [(1, 1), (1, 1025), (3, 1), (3, 7), (5, 100003)])
def test_masked_sgd_member_lr_equals_separate_calls(cuda_ext, members, segment, dtype, nesterov, offset):
    """lr[k] for the k-th of K equal segments: bit for bit K calls of masked_sgd_ of their own
    (segments shorter than a vector pack, and packs straddling members, included)."""
    n = members * segment
    gen = torch.Generator(device="cuda").manual_seed(n + offset)
    p, g, b = (torch.randn(n, device="cuda", generator=gen).to(dtype) for _ in range(3))
    keep = (torch.rand(n, device="cuda", generator=gen) < 0.6).view(torch.uint8)
    lr = torch.rand(members, device="cuda", generator=gen)
    lr[0] = 0.0
    pp, gg, bb, kk = _flat(p, offset), _flat(g, offset), _flat(b, offset), _flat(keep, offset)
    cuda_ext.masked_sgd_member_lr_(pp, gg, bb, kk, lr, 0.9, 5e-4, nesterov)
    for k in range(members):
        part = slice(k * segment, (k + 1) * segment)
        want_p, want_b = p[part].clone(), b[part].clone()
        cuda_ext.masked_sgd_(want_p, g[part].clone(), want_b, keep[part].clone(), float(lr[k]), 0.9, 5e-4, nesterov)
        assert torch.equal(pp[part], want_p) and torch.equal(bb[part], want_b)


def test_masked_sgd_member_lr_rejects_bad_rates(cuda_ext):
    x = torch.zeros(6, device="cuda")
    keep = torch.ones(6, dtype=torch.uint8, device="cuda")
    with pytest.raises(RuntimeError, match="divide"):
        cuda_ext.masked_sgd_member_lr_(x, x.clone(), x.clone(), keep, torch.ones(4, device="cuda"), 0.9, 0.0, False)
    with pytest.raises(RuntimeError, match="float32"):
        cuda_ext.masked_sgd_member_lr_(x, x.clone(), x.clone(), keep, torch.ones(3, device="cuda").double(),
                                       0.9, 0.0, False)
    with pytest.raises(RuntimeError, match="lr must be on"):
        cuda_ext.masked_sgd_member_lr_(x, x.clone(), x.clone(), keep, torch.ones(3), 0.9, 0.0, False)


def _keys(w, largest):
    bits = w.abs().view(torch.int32).to(torch.int64)  # sign bit clear: non-negative
    return 0x7FFFFFFF - bits if largest else bits


@pytest.mark.parametrize("largest", [False, True])
@pytest.mark.parametrize("n", SIZES)
def test_key_histogram_matches_bincount(cuda_ext, n, largest):
    gen = torch.Generator(device="cuda").manual_seed(n + largest)
    w = torch.randn(n, device="cuda", generator=gen)
    if n >= 1025:  # ties, zeros of both signs, and a crowded bin for the warp aggregation
        w[:300] = 0.5
        w[300:310] = 0.0
        w[310:320] = -0.0
        w[320:330] = -0.5
    keep = torch.rand(n, device="cuda", generator=gen) < 0.3
    kept = _keys(w, largest)[keep]

    high = cuda_ext.key_histogram(w, keep.view(torch.uint8), largest, 16, -1)
    assert high.dtype == torch.int32 and high.shape == (65536,) and high.device == w.device
    assert torch.equal(high.long(), torch.bincount(kept >> 16, minlength=65536))

    prefix = int(kept[0] >> 16) if kept.numel() else 123
    low = cuda_ext.key_histogram(w, keep.view(torch.uint8), largest, 0, prefix)
    selected = kept[(kept >> 16) == prefix]
    assert torch.equal(low.long(), torch.bincount(selected & 0xFFFF, minlength=65536))

    everything = cuda_ext.key_histogram(w, keep.view(torch.uint8), largest, 0, -1)
    assert torch.equal(everything.long(), torch.bincount(kept & 0xFFFF, minlength=65536))


def test_key_histogram_rejects_bad_inputs(cuda_ext):
    w = torch.zeros(8, device="cuda")
    keep = torch.ones(8, dtype=torch.uint8, device="cuda")
    with pytest.raises(RuntimeError, match="shift"):
        cuda_ext.key_histogram(w, keep, False, 8, -1)
    with pytest.raises(RuntimeError, match="float32"):
        cuda_ext.key_histogram(w.double(), keep, False, 16, -1)
    with pytest.raises(RuntimeError, match="keep"):
        cuda_ext.key_histogram(w, keep.float(), False, 16, -1)
