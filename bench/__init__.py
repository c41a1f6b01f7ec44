"""The benchmarks, run from the project root as modules (the Make targets do): `python -m bench.run`
(the data path against host, Docker's overlay and bridge; its report is bench/report.py),
`bench.services` (Swarm VIPs), `bench.profile` (cost per packet), `bench.scale` (control plane at
scale), `bench.convergence` (a 5-host testbed). They need the development dependencies
(`make dev`)."""
