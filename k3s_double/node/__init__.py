"""The node process of the k3s node double: ``/bin/k3s`` and ``/bin/ctr``.

The top of the import direction: it starts the API server
(``k3s_double.apiserver``) and the controllers (``k3s_double.controllers``);
neither imports anything from here.
"""
