"""The resident daemon (``python -m dfi_daemon.server``): socket, job queue, worker, neighbour sources.

config    settings, options and start-up errors (light: the CLI imports it)
endpoint  endpoint checks, the per-endpoint lock, CURVE
daemon    the ROUTER main loop: validation, dispatch, heartbeats, replies
worker    the thread that runs jobs on the device
jobs      queue, cancel and client-liveness bookkeeping
runner    wire request -> engine call -> wire result
sources   where neighbours come from (synthetic, a face database)
process   logging, signals, exit codes; ``main``
"""
