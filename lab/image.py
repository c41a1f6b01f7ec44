"""The containers' image, built offline: busybox-static, a static UDP echo tool, and the
host's iperf3, sockperf, nginx, wrk, redis and memcached (servers and benchmark clients) with
the shared libraries they need (for traffic tests and benchmarks); nginx serves /www with
image/nginx.conf."""

from __future__ import annotations

import functools
import hashlib
import io
import os
import shutil
import subprocess
import tarfile
import tempfile

import docker

from lab import require

REPO = "xmasq-test/busybox"
HERE = os.path.dirname(__file__)
BUSYBOX = "/bin/busybox"
TOOLS = (
    "/usr/bin/iperf3",
    "/usr/bin/sockperf",
    "/usr/sbin/nginx",
    "/usr/bin/wrk",
    "/usr/bin/redis-server",
    "/usr/bin/redis-benchmark",
    "/usr/bin/memcached",
    "/usr/bin/memcaslap",
)
NGINX_CONF = os.path.join(HERE, "image", "nginx.conf")


def _digest() -> str:
    h = hashlib.sha256(b"PATH=/bin:/usr/bin")
    for path in (BUSYBOX, os.path.join(HERE, "image", "udpecho.c"), NGINX_CONF, *TOOLS):
        with open(path, "rb") as f:
            h.update(f.read())
    return h.hexdigest()[:12]


def ensure_image(client: docker.DockerClient) -> str:
    """Import REPO:<digest> into this dockerd unless it has it; returns the tag."""
    require("the test image", commands=(BUSYBOX, "gcc", *TOOLS))
    tag = f"{REPO}:{_digest()}"
    try:
        client.images.get(tag)
    except docker.errors.ImageNotFound:
        client.api.import_image_from_data(
            _rootfs_tar(), repository=REPO, tag=tag.split(":")[1], changes=['CMD ["/bin/sh"]', "ENV PATH=/bin:/usr/bin"]
        )
    return tag


@functools.cache
def _rootfs_tar() -> bytes:
    with tempfile.TemporaryDirectory() as root:
        bindir = os.path.join(root, "bin")
        os.makedirs(bindir)
        for d in ("etc", "tmp", "proc", "sys", "dev", "www"):
            os.makedirs(os.path.join(root, d))
        shutil.copy(BUSYBOX, bindir)
        applets = subprocess.run([BUSYBOX, "--list"], capture_output=True, text=True, check=True).stdout.split()
        for applet in applets:
            if applet != "busybox":
                os.symlink("busybox", os.path.join(bindir, applet))
        subprocess.run(
            ["gcc", "-O2", "-static", "-o", os.path.join(bindir, "udpecho"), os.path.join(HERE, "image", "udpecho.c")],
            check=True,
        )
        for tool in TOOLS:
            for path in [tool, *_shared_libraries(tool)]:
                dest = os.path.join(root, path.lstrip("/"))
                os.makedirs(os.path.dirname(dest), exist_ok=True)
                shutil.copy(path, dest)
        with open(os.path.join(root, "www", "index.html"), "w") as f:
            f.write("hello from xmasq\n")
        shutil.copy(NGINX_CONF, os.path.join(root, "etc", "nginx.conf"))
        with open(os.path.join(root, "etc", "passwd"), "w") as f:
            f.write("root:x:0:0:root:/:/bin/sh\n")
        with open(os.path.join(root, "etc", "group"), "w") as f:
            f.write("root:x:0:\n")
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            tar.add(root, arcname=".")
        return buf.getvalue()


def _shared_libraries(binary: str) -> list[str]:
    """The files ldd resolves for binary, the dynamic loader included."""
    out = subprocess.run(["ldd", binary], capture_output=True, text=True, check=True).stdout
    paths = []
    for line in out.splitlines():
        parts = line.split()
        path = parts[2] if "=>" in parts and len(parts) > 2 else parts[0]
        if path.startswith("/"):
            paths.append(path)
    return paths
