"""The control plane: the typed records (model.py), etcd (kv.py), the etcd layout (layout.py),
the cluster store and its view (store.py), this host's state file (state.py), this host's records
in etcd (records.py), and the loops that keep the host in step with the cluster (liveness.py,
peers.py)."""
