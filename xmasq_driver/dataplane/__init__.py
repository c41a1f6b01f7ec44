"""The data plane: the VXLAN devices and veths (overlay.py), the eBPF programs and maps
(datapath.py, cgroup.py), iptables (firewall.py), and the Swarm service VIPs it balances
(services.py)."""
