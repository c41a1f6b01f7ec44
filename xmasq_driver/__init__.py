"""XMasq: a Docker overlay network driver with eBPF fast paths."""

__version__ = "0.1.0"
