"""Builds lthfast's C++ extension (csrc/) with ninja through torch.utils.cpp_extension.

The extension is optional: if it cannot be compiled (no compiler, a broken
toolchain), the package installs without it and runs on plain PyTorch.
Triton kernels live in kernels/ and install as the package `lthfast.kernels`.
"""
import sys

from setuptools import setup

ext_modules, cmdclass = [], {}
try:
    from torch.utils.cpp_extension import BuildExtension, CppExtension

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

    ext_modules = [CppExtension(
        "lthfast._C",
        ["csrc/mask_ops.cpp"],
        extra_compile_args=["-O3", "-fopenmp"],
        extra_link_args=["-fopenmp"],
    )]
    cmdclass = {"build_ext": OptionalBuildExtension.with_options(use_ninja=True)}
except ImportError as exc:
    print(f"WARNING: torch is not importable at build time ({exc}); "
          "lthfast's C++ extension is skipped.", file=sys.stderr)

setup(
    packages=["lthfast", "lthfast.kernels"],
    package_dir={"lthfast.kernels": "kernels"},
    ext_modules=ext_modules,
    cmdclass=cmdclass,
)
