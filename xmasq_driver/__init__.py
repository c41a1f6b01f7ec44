"""XMasq: a Docker overlay network driver with eBPF fast paths."""

__version__ = "0.2.0"
