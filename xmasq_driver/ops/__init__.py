"""Operations: the `xmasq` command (cli.py, daemon.py, client.py), `xmasq serve`, which builds
and wires everything (server.py), and the operator's views (admin.py, metrics.py)."""
