"""Build hook for the one C extension: acquire/release atomics, CAS and ring copies."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "bridge.transport._shm",
            sources=["bridge/transport/_shm.c"],
            extra_compile_args=["-O2", "-std=c11", "-Wall", "-Wextra"],
        )
    ]
)
