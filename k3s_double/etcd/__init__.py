"""The double's etcd: a replicated, persisted store under the API server.

k3s embeds etcd (``--cluster-init``, ``--server``) or kine over sqlite; both
keep the cluster's objects on disk under the data dir, and etcd keeps them
on every server with a quorum's agreement. This package is that store, kept
small:

- :mod:`.store`: a member's committed keys, an append-only log and snapshots
  on disk (``<data-dir>/server/db/etcd``);
- :mod:`.peers`: peer traffic on 2380, mutual TLS with the server CA;
- :mod:`.raft`: :class:`~.raft.Member`: membership, heartbeats, elections,
  replication, ReadIndex, check-quorum;
- :mod:`.replica`: :class:`~.replica.Replica`, the binding between a member
  and the API's :class:`~k3s_double.apiserver.database.Database` (the watch
  cache over it);
- :mod:`.backend`: :class:`~.backend.ReplicatedAPI`, what a server's
  listener asks: quorum reads, writes sent to the leader, read-your-writes.

It may import ``k3s_double.apiserver``; ``k3s_double.node`` wires it up.
"""
