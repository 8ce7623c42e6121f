"""Build the Cython extension against the system libsodium.

Before compiling anything, check that sodium.h can be found, so that a machine
without the libsodium headers gets one sentence saying what to install rather
than a compiler error dump.
"""

import os
import shutil
import subprocess
import tempfile

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

MISSING_SODIUM = (
    "securekeys needs the libsodium headers (sodium.h) to build: install them "
    "with `apt-get install libsodium-dev` (Debian/Ubuntu), `dnf install "
    "libsodium-devel` (Fedora) or `brew install libsodium` (macOS), then retry."
)


def pkg_config(*args: str) -> list[str]:
    """Flags from pkg-config for libsodium, or [] when it is not available."""
    if shutil.which("pkg-config") is None:
        return []
    result = subprocess.run(["pkg-config", *args, "libsodium"],
                            capture_output=True, text=True)
    return result.stdout.split() if result.returncode == 0 else []


def sodium_include_dirs() -> list[str]:
    return [flag[2:] for flag in pkg_config("--cflags-only-I")]


def sodium_library_dirs() -> list[str]:
    return [flag[2:] for flag in pkg_config("--libs-only-L")]


class BuildExt(build_ext):
    def run(self) -> None:
        self._require_sodium_header()
        super().run()

    def _require_sodium_header(self) -> None:
        from setuptools._distutils.ccompiler import new_compiler
        from setuptools._distutils.errors import CompileError
        from setuptools._distutils.sysconfig import customize_compiler

        compiler = new_compiler()
        customize_compiler(compiler)
        with tempfile.TemporaryDirectory() as tmp:
            probe = os.path.join(tmp, "probe.c")
            with open(probe, "w") as f:
                f.write("#include <sodium.h>\nint main(void) { return sodium_init(); }\n")
            devnull = os.open(os.devnull, os.O_WRONLY)
            saved = os.dup(2)
            os.dup2(devnull, 2)   # the compiler's own complaint is noise here
            try:
                compiler.compile([probe], output_dir=tmp,
                                 include_dirs=sodium_include_dirs())
                found = True
            except CompileError:
                found = False
            finally:
                os.dup2(saved, 2)
                os.close(saved)
                os.close(devnull)
        if not found:
            raise SystemExit(MISSING_SODIUM)


def extensions() -> list[Extension]:
    """One extension per securekeys/*.pyx, each linked against libsodium."""
    from Cython.Build import cythonize

    trace = os.environ.get("SECUREKEYS_CYTHON_TRACE") == "1"
    macros = [("CYTHON_TRACE_NOGIL", "1")] if trace else []
    modules = [
        Extension(
            f"securekeys.{name[:-len('.pyx')]}",
            [f"securekeys/{name}"],
            include_dirs=sodium_include_dirs(),
            library_dirs=sodium_library_dirs(),
            libraries=["sodium"],
            define_macros=macros,
        )
        for name in sorted(os.listdir("securekeys"))
        if name.endswith(".pyx")
    ]
    return cythonize(modules, compiler_directives={"linetrace": trace}, include_path=["."])


setup(ext_modules=extensions(), cmdclass={"build_ext": BuildExt})
