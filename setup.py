"""Build hook for the C extensions: the transport's atomics and ring copies, and the C side
of the LV2 host (bridge/adapters/_lv2host.c: URID map, log, worker, the block call)."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "bridge.transport._shm",
            sources=["bridge/transport/_shm.c"],
            extra_compile_args=["-O2", "-std=c11", "-Wall", "-Wextra"],
        ),
        Extension(
            "bridge.adapters._lv2host",
            sources=["bridge/adapters/_lv2host.c"],
            extra_compile_args=["-O2", "-std=gnu11", "-Wall", "-Wextra"],
            extra_link_args=["-pthread"],
        ),
    ]
)
