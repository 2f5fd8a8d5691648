"""The API server of the k3s node double: HTTP, routing, storage, controllers' data.

It imports nothing from ``k3s_double.node`` or ``k3s_double.controllers``:
the node starts it, the controllers work on its :class:`~.storage.Storage`.
"""
