"""Build the Cython extensions against the system libsodium.

Every securekeys/*.pyx is one extension module.  Before compiling anything,
check the tool chain in the order a build needs it (a C compiler, Python's
headers, libsodium's headers, the Argon2 reference library's header), so that a machine missing one of them gets one
sentence naming what to install rather than a compiler error dump.

Cython runs only when extensions are built (not for an sdist), so an sdist
carries the .pyx sources and no generated .c.
"""

import glob
import os
import shutil
import subprocess
import sysconfig
import tempfile

from setuptools import Extension, setup
from setuptools._distutils.ccompiler import CCompiler
from setuptools.command.build_ext import build_ext

# SECUREKEYS_CYTHON_TRACE=1: a line-tracing build, for coverage of Cython code.
TRACE = os.environ.get("SECUREKEYS_CYTHON_TRACE") == "1"
# SECUREKEYS_PORTABLE=1: only the architecture-neutral C, as a build for a CPU
# without its own code here gets (no inline-assembly register wipe after a
# crypto call: the stack is still zeroed).  Lets x86-64 test the path an
# aarch64 build takes today.
PORTABLE = os.environ.get("SECUREKEYS_PORTABLE") == "1"
APT_HINT = "on Debian/Ubuntu, `apt-get install {}`, then retry."


# The C libraries each extension links: libsodium everywhere; the Argon2
# reference library (argon2_ctx() takes an allocator, so password_key's working
# memory can be guarded memory) only where password_key is.
LIBRARIES = {"securekeys.crypto": ["sodium", "argon2"]}
PKG_CONFIG_NAMES = {"sodium": "libsodium", "argon2": "libargon2"}


def pkg_config(package: str, *args: str) -> list[str]:
    """Flags from pkg-config for `package`, or [] when it is not available."""
    if shutil.which("pkg-config") is None:
        return []
    result = subprocess.run(["pkg-config", *args, package],
                            capture_output=True, text=True)
    return result.stdout.split() if result.returncode == 0 else []


def header_dirs(libraries: list[str]) -> list[str]:
    return [flag[2:] for library in libraries
            for flag in pkg_config(PKG_CONFIG_NAMES[library], "--cflags-only-I")]


def link_dirs(libraries: list[str]) -> list[str]:
    return [flag[2:] for library in libraries
            for flag in pkg_config(PKG_CONFIG_NAMES[library], "--libs-only-L")]


class BuildExt(build_ext):
    def run(self) -> None:
        self._check_toolchain()
        from Cython.Build import cythonize

        # Cython runs here, when extensions are built, not when setup.py is
        # loaded: an sdist then carries the .pyx and no generated .c.  The
        # Extension objects stay those setuptools prepared; only their
        # sources change from .pyx to the generated .c.
        generated = {ext.name: ext for ext in cythonize(
            self.extensions, include_path=["."], compiler_directives={"linetrace": TRACE})}
        for ext in self.extensions:
            ext.sources = generated[ext.name].sources
        super().run()

    def _check_toolchain(self) -> None:
        """Stop with one sentence at the first missing piece of the tool chain."""
        from setuptools._distutils.ccompiler import new_compiler
        from setuptools._distutils.sysconfig import customize_compiler

        compiler = new_compiler()
        customize_compiler(compiler)   # honours CC, as the real build will
        program = compiler.compiler_so[0]
        if shutil.which(program) is None:
            raise SystemExit(f"securekeys needs a C compiler to build, and `{program}` "
                             f"was not found: {APT_HINT.format('gcc libc6-dev')}")
        probes = [
            ("#include <stdio.h>\n", [],
             f"the C compiler `{program}` cannot compile a trivial C file (are the C "
             f"library headers missing?): {APT_HINT.format('libc6-dev')}"),
            ("#include <Python.h>\n", [sysconfig.get_paths()["include"]],
             f"securekeys needs Python's C headers (Python.h) to build: "
             f"{APT_HINT.format('python3-dev')}"),
            ("#include <sodium.h>\nint probe(void) { return sodium_init(); }\n",
             header_dirs(["sodium"]),
             f"securekeys needs the libsodium headers (sodium.h) to build: "
             f"{APT_HINT.format('libsodium-dev')}"),
            ("#include <argon2.h>\nint probe(void) { return ARGON2_VERSION_13; }\n",
             header_dirs(["argon2"]),
             f"securekeys needs the Argon2 reference library's headers (argon2.h) to build: "
             f"{APT_HINT.format('libargon2-dev')}"),
        ]
        for source, include_dirs, missing in probes:
            if not _compiles(compiler, source, include_dirs):
                raise SystemExit(missing)


def _compiles(compiler: CCompiler, source: str, include_dirs: list[str]) -> bool:
    """Whether `compiler` compiles `source` to an object file (no linking)."""
    from setuptools._distutils.errors import CompileError

    with tempfile.TemporaryDirectory() as tmp:
        probe = os.path.join(tmp, "probe.c")
        with open(probe, "w") as f:
            f.write(source)
        devnull = os.open(os.devnull, os.O_WRONLY)
        saved = os.dup(2)
        os.dup2(devnull, 2)   # the compiler's own complaint is noise here
        try:
            compiler.compile([probe], output_dir=tmp, include_dirs=include_dirs)
            return True
        except CompileError:
            return False
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            os.close(devnull)


def extensions() -> list[Extension]:
    """One extension per securekeys/*.pyx, each linked against libsodium
    (and the crypto extension against libargon2 too)."""
    sources = sorted(glob.glob("securekeys/*.pyx"))
    if not sources:
        # An sdist or checkout without the Cython sources would otherwise
        # "succeed" with a wheel holding no extension module at all.
        raise SystemExit(
            f"securekeys: no extension sources (securekeys/*.pyx, at least "
            f"securekeys/_memory.pyx) in {os.path.abspath('securekeys')}: this source "
            f"tree or sdist is incomplete; build from a full checkout or a complete sdist.")
    macros = [("CYTHON_TRACE_NOGIL", "1")] if TRACE else []
    if PORTABLE:
        macros.append(("SECUREKEYS_PORTABLE", "1"))
    built = []
    for source in sources:
        name = source[:-len(".pyx")].replace("/", ".")
        libraries = LIBRARIES.get(name, ["sodium"])
        built.append(Extension(
            name,
            [source],
            include_dirs=header_dirs(libraries),
            library_dirs=link_dirs(libraries),
            libraries=libraries,
            define_macros=macros,
        ))
    return built


setup(ext_modules=extensions(), cmdclass={"build_ext": BuildExt})
