"""The farm worker: a warm recorder in a loop of lease, record, store, report (`recorder worker`).

`client` speaks `contract.protocol` to the orchestrator, `job` runs one leased recording with its
heartbeats, `loop` keeps the recorder warm between leases and handles shutdown, `cli` holds the flags.
"""
