"""Builds lthfast's C++ extension lthfast._C with ninja through torch.utils.cpp_extension,
and its CUDA extension lthfast._cuda where CUDA is wanted.

Kernels are grouped by op in lthfast/ops/kernels/<op>/: each extension is its entry point in
csrc/ (module.cpp, cuda_module.cpp) plus every op's cpu.cpp (or cuda.cu and
cuda_binding.cpp) found there. The extensions are optional: if one cannot be compiled
(no compiler, a broken toolchain), the package installs without it and runs on plain PyTorch.

The extensions are built against the torch that is importable here, so install lthfast with
`pip install --no-build-isolation` after torch (pyproject.toml says why). Each built extension
gets a stamp beside it, `<extension file>.torch`, holding that torch's version: lthfast refuses
an extension built for another torch (lthfast.ops.kernels.backends) and runs on plain PyTorch
until it is rebuilt. LTHFAST_BUILD_EXT=0 installs lthfast without building anything
(bench/gpu_setup.sh: bench/gpu_check.py's `build` section builds them once, timed).
"""
import glob
import os
import sys

from setuptools import find_packages, setup

ext_modules, cmdclass = [], {}
STAMP = ".torch"  # beside each built extension: the torch version it was built against
try:
    if os.environ.get("LTHFAST_BUILD_EXT") == "0":  # asked for no extensions: skipped below, silently
        raise ImportError("LTHFAST_BUILD_EXT=0")
    import torch
    from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension

    class OptionalBuildExtension(BuildExtension):
        """BuildExtension that warns instead of failing when compilation fails, and stamps each
        extension it builds with torch's version (in the build folder and, in place, beside it)."""

        def run(self):
            self.built = []
            try:
                super().run()
            except Exception as exc:  # noqa: BLE001 - any compiler failure
                print(f"WARNING: lthfast C++ extension not built ({exc}); "
                      "lthfast will run on plain PyTorch.", file=sys.stderr)
            if self.inplace:  # --inplace and editable installs: the files were copied beside the sources
                for name in self.built:
                    self.stamp(self.get_ext_fullpath(name))

        def build_extension(self, ext):
            try:
                super().build_extension(ext)
            except Exception as exc:  # noqa: BLE001
                print(f"WARNING: lthfast C++ extension {ext.name} not built ({exc}); "
                      "lthfast will run on plain PyTorch.", file=sys.stderr)
                return
            self.built.append(ext.name)
            self.stamp(self.get_ext_fullpath(ext.name))

        @staticmethod
        def stamp(path):
            if os.path.exists(path):
                with open(path + STAMP, "w") as file:
                    file.write(torch.__version__ + "\n")

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
    if os.environ.get("LTHFAST_BUILD_EXT") != "0":
        print(f"WARNING: torch is not importable at build time ({exc}); lthfast's C++ extension is "
              "skipped. With torch installed, install lthfast with pip's --no-build-isolation to build it.",
              file=sys.stderr)

setup(
    packages=find_packages(include=["lthfast", "lthfast.*"]),
    ext_modules=ext_modules,
    cmdclass=cmdclass,
)
