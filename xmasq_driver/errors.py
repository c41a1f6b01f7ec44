"""Errors the plugin API turns into {"Err": "..."} answers."""


class DriverError(Exception):
    """A request that cannot be served; the message is shown to the Docker user."""

    status = 400


class NotFound(DriverError):
    status = 404


class BackendError(DriverError):
    """etcd, netlink or iptables failed or timed out; the message names which."""

    status = 500


class StorageError(DriverError):
    """The local state could not be written (a full or read-only disk); the message names the file."""

    status = 500
