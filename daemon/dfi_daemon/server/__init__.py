"""The resident daemon (``python -m dfi_daemon.server``): socket, job queue, worker, neighbour sources.

config    settings, options and start-up errors (light: the CLI imports it)
endpoint  endpoint checks, the per-endpoint lock
auth      CURVE on every TCP endpoint: the local key folder, the authenticator
front     the front door: a child process owning the public socket, with a memory budget
front_link  the daemon's side of it: start, restart, send, receive
outbox    per-peer bounded reply queues (in the front door)
daemon    the main loop: validation, dispatch, heartbeats, replies
worker    the thread that runs jobs on the device
jobs      queue, cancel and client-liveness bookkeeping
runner    wire request -> engine call -> wire result
sources   where neighbours come from (synthetic, a face database)
process   logging, signals, exit codes; ``main``
"""
