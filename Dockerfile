# The driver's image; `make plugin` (issue 7) turns its rootfs into a managed plugin.
# bcc comes from Debian (python3-bpfcc), so the venv uses Debian's python3 with system site packages.
FROM debian:bookworm-slim
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      python3 python3-venv python3-bpfcc iproute2 iptables ca-certificates \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /opt/xmasq
COPY requirements.txt pyproject.toml README.md ./
COPY xmasq_driver ./xmasq_driver
COPY bpf ./bpf
RUN python3 -m venv --system-site-packages /opt/xmasq/venv \
 && /opt/xmasq/venv/bin/pip install --no-cache-dir -r requirements.txt . \
 && /opt/xmasq/venv/bin/xmasq --version
ENTRYPOINT ["/opt/xmasq/venv/bin/xmasq", "serve"]
