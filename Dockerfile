# The driver's image; `make plugin` turns its rootfs into the managed plugin (plugin/config.json).
# bcc comes from Debian (python3-bpfcc), so the venv uses Debian's python3 with system site
# packages. Python packages come from build/wheels, downloaded on the host by scripts/plugin.sh:
# the build itself needs only Debian's mirror.
FROM debian:bookworm-slim
# scripts/plugin.sh prunes this image's untagged predecessors by this label
LABEL org.xmasq.image=driver
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      python3 python3-venv python3-bpfcc iproute2 iptables ipset ca-certificates wireguard-tools wireguard-go \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /opt/xmasq
COPY requirements.txt ./
COPY build/wheels /tmp/wheels
RUN python3 -m venv --system-site-packages /opt/xmasq/venv \
 && /opt/xmasq/venv/bin/pip install --no-cache-dir --no-index --find-links /tmp/wheels -r requirements.txt \
 && rm -rf /tmp/wheels
COPY xmasq_driver ./xmasq_driver
COPY bpf ./bpf
RUN /opt/xmasq/venv/bin/python -m xmasq_driver --version
ENV PATH=/opt/xmasq/venv/bin:/usr/sbin:/usr/bin:/sbin:/bin
ENTRYPOINT ["/opt/xmasq/venv/bin/python", "-m", "xmasq_driver", "serve"]
