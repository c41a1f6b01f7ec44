"""Docker's plugin API: the HTTP adapter (http.py) and the two drivers it calls, NetworkDriver
(network.py) and IpamDriver (ipam.py). The wire types are ../protocol.py."""
