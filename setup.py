"""Builds lthfast's C++ extension lthfast._C with ninja through torch.utils.cpp_extension,
and its CUDA extension lthfast._cuda where CUDA is wanted.

Kernels are grouped by op in lthfast/ops/kernels/<op>/: each extension is its entry point in
csrc/ (module.cpp, cuda_module.cpp) plus every op's cpu.cpp (or cuda.cu and
cuda_binding.cpp) found there. The extensions are optional: if one cannot be compiled
(no compiler, a broken toolchain), the package installs without it and runs on plain PyTorch.
"""
import glob
import os
import sys

from setuptools import find_packages, setup

ext_modules, cmdclass = [], {}
try:
    import torch
    from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension

    class OptionalBuildExtension(BuildExtension):
        """BuildExtension that warns instead of failing when compilation fails."""

        def run(self):
            try:
                super().run()
            except Exception as exc:  # noqa: BLE001 - any compiler failure
                print(f"WARNING: lthfast C++ extension not built ({exc}); "
                      "lthfast will run on plain PyTorch.", file=sys.stderr)

        def build_extension(self, ext):
            try:
                super().build_extension(ext)
            except Exception as exc:  # noqa: BLE001
                print(f"WARNING: lthfast C++ extension {ext.name} not built ({exc}); "
                      "lthfast will run on plain PyTorch.", file=sys.stderr)

    def op_sources(*patterns):
        """Sources of every op folder matching `patterns`, sorted: a stable build order.
        Relative paths: setuptools wants them relative to setup.py."""
        return sorted(path for pattern in patterns for path in glob.glob(f"lthfast/ops/kernels/*/{pattern}"))

    # Headers: listed so that editing one rebuilds its users, and so that an sdist ships them.
    headers = sorted(glob.glob("lthfast/ops/kernels/*.h") + glob.glob("lthfast/ops/kernels/**/*.cuh", recursive=True))

    ext_modules = [CppExtension(
        "lthfast._C",
        ["csrc/module.cpp", *op_sources("cpu.cpp")],
        depends=headers,
        extra_compile_args=["-O3", "-fopenmp"],
        extra_link_args=["-fopenmp"],
    )]
    # The CUDA extension is built only where it can run (a GPU is visible) or on request
    # (LTHFAST_BUILD_CUDA=1): CPU-only CI machines must not spend minutes in nvcc, and
    # tests/test_op_cuda_sources.py compile-checks the sources in seconds. No --use_fast_math:
    # results must match the CPU reference.
    want_cuda = torch.cuda.is_available() or os.environ.get("LTHFAST_BUILD_CUDA") == "1"
    if want_cuda and CUDA_HOME is not None:
        if not torch.cuda.is_available():  # no GPU to read the architecture from: A100, H100
            os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "8.0;9.0")
        ext_modules.append(CUDAExtension(
            "lthfast._cuda",
            ["csrc/cuda_module.cpp", *op_sources("cuda_binding.cpp", "cuda.cu")],
            depends=headers,
            extra_compile_args={"cxx": ["-O3"], "nvcc": ["-O3"]},
        ))
    cmdclass = {"build_ext": OptionalBuildExtension.with_options(use_ninja=True)}
except ImportError as exc:
    print(f"WARNING: torch is not importable at build time ({exc}); "
          "lthfast's C++ extension is skipped.", file=sys.stderr)

setup(
    packages=find_packages(include=["lthfast", "lthfast.*"]),
    ext_modules=ext_modules,
    cmdclass=cmdclass,
)
