import securekeys
from Cython.Build import cythonize
from setuptools import Extension, setup

include = securekeys.get_include()   # .pxd files for Cython, sodium.h for the C compiler

setup(ext_modules=cythonize(
    [Extension("sk_downstream", ["sk_downstream.pyx"],
               include_dirs=include, libraries=["sodium"])],
    include_path=include,
))
