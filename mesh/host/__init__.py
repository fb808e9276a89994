"""What a process hosting an agent as a service keeps, below the RPC layer that serves it.

Its active runs (for Cancel, the concurrency limit and shutdown), its run
ledger (caller's run ids as idempotency keys), its audit log, and its
allocator settings. Nothing here knows gRPC: the RPC layer adapts calls to
these, so that another protocol could serve the same agent the same way.
"""
