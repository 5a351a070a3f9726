"""Builds one C extension per env folder: shoal/envs/<name>/binding.c -> shoal.envs.<name>._c.

Flags: warnings on (-Wall -Wextra); -O3 -march=native unless SHOAL_PORTABLE=1.
SHOAL_SANITIZE=1 builds with AddressSanitizer and UBSan instead (tests/test_sanitizers.py), with
-march=native unless SHOAL_PORTABLE=1.
SHOAL_ONLY=maze,tetris builds only those env extensions (the trainer kernels are always built).
SHOAL_NO_OPENMP=1 builds the trainer kernels and the C policy binding without OpenMP
(single-threaded).
"""

import glob
import os

from setuptools import Extension, setup

ENV_DIR = os.path.join("shoal", "envs")

warnings = ["-Wall", "-Wextra", "-Wno-unused-function", "-Wno-missing-field-initializers"]
if os.environ.get("SHOAL_SANITIZE") == "1":
    # the same target flags as the default build, so the code paths chosen for the target (the
    # C policy's AVX/FMA kernels) are the ones checked; SHOAL_PORTABLE=1 checks the portable ones
    optimise = ["-O1", "-g", "-fsanitize=address,undefined", "-fno-omit-frame-pointer",
                "-fno-sanitize-recover=undefined",
                *([] if os.environ.get("SHOAL_PORTABLE") == "1" else ["-march=native"])]
    link = ["-fsanitize=address,undefined"]
elif os.environ.get("SHOAL_PORTABLE") == "1":
    optimise, link = ["-O3"], []
else:
    optimise, link = ["-O3", "-march=native"], []
if os.environ.get("SHOAL_WERROR") == "1":
    warnings.append("-Werror")

extensions = [
    Extension(
        name=f"shoal.envs.{os.path.basename(os.path.dirname(src))}._c",
        sources=[src],
        include_dirs=[ENV_DIR],
        depends=glob.glob(os.path.join(os.path.dirname(src), "*.h"))
        + glob.glob(os.path.join(ENV_DIR, "*.h")) + [os.path.join("shoal", "net", "shoal_net.h")],
        extra_compile_args=["-std=c11", "-D_GNU_SOURCE", "-pthread", *warnings, *optimise],
        extra_link_args=["-pthread", "-lm", *link],
    )
    for src in sorted(glob.glob(os.path.join(ENV_DIR, "*", "binding.c")))
]

# The trainer's kernels: shoal/trainer/<name>.c -> shoal.trainer._<name> (GAE advantages; the
# LSTM cell's elementwise forward/backward; pausing the OpenMP runtime they share with torch).
# They split rows over OpenMP threads (shoal/trainer/kernels.h says why); SHOAL_NO_OPENMP=1
# builds them single-threaded.
TRAINER_DIR = os.path.join("shoal", "trainer")
openmp = [] if os.environ.get("SHOAL_NO_OPENMP") == "1" else ["-fopenmp"]
for kernel in ("advantage", "lstm_cell", "openmp"):
    src = os.path.join(TRAINER_DIR, f"{kernel}.c")
    if os.path.exists(src):
        extensions.append(
            Extension(
                name=f"shoal.trainer._{kernel}",
                sources=[src],
                depends=[os.path.join(TRAINER_DIR, "kernels.h"),
                         os.path.join(TRAINER_DIR, "buffer_format.h")],
                extra_compile_args=["-std=c11", "-D_GNU_SOURCE", *openmp, *warnings, *optimise],
                extra_link_args=["-lm", *openmp, *link],
            )
        )

# Single-threaded trainer helpers: the PPO loss from a categorical policy's logits on, with its
# gradient (shoal/trainer/loss_head.py), and the shared-memory gradient sum's counters and
# copies (shoal/trainer/distributed.py's SharedMemorySum): shoal/trainer/<name>.c ->
# shoal.trainer._<name>.
for kernel in ("ppo_head", "shm_sum"):
    extensions.append(
        Extension(
            name=f"shoal.trainer._{kernel}",
            sources=[os.path.join(TRAINER_DIR, f"{kernel}.c")],
            depends=[os.path.join(TRAINER_DIR, "buffer_format.h")],
            extra_compile_args=["-std=c11", "-D_GNU_SOURCE", *warnings, *optimise],
            extra_link_args=["-lm", *link],
        )
    )

# The C policy (shoal/net/shoal_net.h) for Python: shoal/net/_net.c -> shoal.net._net.
NET_DIR = os.path.join("shoal", "net")
extensions.append(
    Extension(
        name="shoal.net._net",
        sources=[os.path.join(NET_DIR, "_net.c")],
        include_dirs=[NET_DIR, TRAINER_DIR],
        depends=[os.path.join(NET_DIR, "shoal_net.h"), os.path.join(TRAINER_DIR, "kernels.h"),
                 os.path.join(TRAINER_DIR, "buffer_format.h")],
        extra_compile_args=["-std=c11", "-D_GNU_SOURCE", *openmp, *warnings, *optimise],
        extra_link_args=["-lm", *openmp, *link],
    )
)

only = [name for name in os.environ.get("SHOAL_ONLY", "").split(",") if name]
if only:
    extensions = [ext for ext in extensions
                  if not ext.name.startswith("shoal.envs.") or ext.name.split(".")[-2] in only]

setup(ext_modules=extensions)
