"""Builds the out-of-tree env ``chase`` (chase/binding.c -> chase/_c*.so) against shoal's headers.

    cd examples/custom_env && python setup.py build_ext --inplace

The headers (shoal_env.h, binding.h, vec_binding.h) ship inside the installed shoal package, in
shoal/envs/, so nothing is copied and shoal is not rebuilt. Flags follow shoal's own setup.py.
"""

import glob
import os

import shoal
from setuptools import Extension, setup

SHOAL_ENVS = os.path.join(os.path.dirname(os.path.abspath(shoal.__file__)), "envs")
HERE = os.path.dirname(os.path.abspath(__file__))

setup(
    name="chase",
    version="0.1.0",
    packages=["chase"],
    ext_modules=[
        Extension(
            name="chase._c",  # the generic binding defines PyInit__c: the module must be `_c`
            sources=["chase/binding.c"],
            include_dirs=[SHOAL_ENVS, os.path.join(HERE, "chase")],
            depends=glob.glob(os.path.join(HERE, "chase", "*.h"))
            + glob.glob(os.path.join(SHOAL_ENVS, "*.h")),
            extra_compile_args=["-std=c11", "-D_GNU_SOURCE", "-pthread", "-O3", "-Wall",
                                "-Wextra", "-Wno-unused-function",
                                "-Wno-missing-field-initializers"],
            extra_link_args=["-pthread", "-lm"],
        )
    ],
)
