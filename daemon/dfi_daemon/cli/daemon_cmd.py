"""``dfi daemon start|stop|status|logs|keys``: managing the resident daemon."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from dfi_wire import protocol as P
from dfi_wire.client import Client, DaemonUnavailable

from .. import paths
from ..server import config as server_config
from . import common, launch


def _start(args: argparse.Namespace) -> int:
    endpoint = common.apply_dirs(args)
    if args.foreground:
        from ..server.process import run

        return run(server_config.config_from_args(args, endpoint, foreground=True))
    pid = paths.read_pid(endpoint)
    if pid:
        with Client(endpoint, timeout=args.timeout, keys_dir=paths.local_keys_dir()) as client:
            differ, _ = common.settings_differ(client, args)
        if differ:
            running, _ = common.describe_differ(differ)
            print(f"dfi: a daemon is already running on {endpoint} (pid {pid}) with {running}, not the settings "
                  "given here; stop it with 'dfi daemon stop' first, or use another --endpoint.", file=sys.stderr)
            return 3
        print(f"dfi: a daemon is already running on {endpoint} (pid {pid})")
        return 0
    client, proc = launch.connect(endpoint, args.timeout, True, common.daemon_argv(args), args.start_timeout,
                                  announce=False, on_demand=False)
    with client:
        hello = client.hello()
    print(f"daemon ready on {endpoint} (pid {proc.pid if proc else paths.read_pid(endpoint)})")
    print(f"  weights:    {hello.get('weights')}")
    print(f"  neighbours: {hello.get('database') or 'none'}")
    print(f"  log:        {paths.log_file()}")
    return 0


def _stop(args: argparse.Namespace) -> int:
    endpoint = common.apply_dirs(args)
    print(launch.stop(endpoint, timeout=max(args.timeout, 5.0)))
    return 0


def _status(args: argparse.Namespace) -> int:
    endpoint = common.apply_dirs(args)
    pid = paths.read_pid(endpoint)
    if pid is None and paths.ipc_path(endpoint) is not None and not paths.ipc_path(endpoint).exists():
        print(f"no daemon is running on {endpoint}")
        return 3
    try:
        with Client(endpoint, timeout=min(args.timeout, 5.0), keys_dir=paths.local_keys_dir()) as c:
            st = c.status()
    except DaemonUnavailable:
        if pid:
            print(f"daemon pid {pid} holds {endpoint} but does not answer (still loading?); see 'dfi daemon logs'")
        else:
            print(f"no daemon is answering on {endpoint}")
        return 3
    mem = st.get("memory", {})
    q = st.get("queue", {})
    print(f"daemon {st.get('server')} on {st.get('endpoint')} (pid {st.get('pid')}, up {st.get('uptime_s')} s)")
    print(f"  device:     {st.get('device')}")
    print(f"  memory:     {mem.get('rss_bytes', 0) / 2**20:.0f} MiB resident"
          + (f", {mem['device_allocated_bytes'] / 2**20:.0f} MiB on the device" if "device_allocated_bytes" in mem
             else ""))
    for name, c in (mem.get("caches") or {}).items():  # what the daemon keeps between jobs, against its bound
        print(f"  cache:      {name} {c.get('bytes', 0) / 2**20:.1f} of {c.get('limit_bytes', 0) / 2**20:.0f} MiB"
              f" ({c.get('entries', 0)} entries)")
    if (ses := st.get("sessions")) is not None:  # the live sliders' photos, kept within their own budget
        print(f"  sessions:   {ses.get('count', 0)} live preview(s), {ses.get('bytes', 0) / 2**20:.1f} of "
              f"{ses.get('budget_bytes', 0) / 2**20:.0f} MiB")
    print(f"  weights:    {st.get('weights')}")
    print(f"  neighbours: {st.get('database') or 'none'}")
    for i, (name, pr) in enumerate((st.get("presets") or {}).items()):
        default = " (the default)" if name == P.DEFAULT_QUALITY else ""
        print(f"  {'quality:' if i == 0 else '':<11} {name} = {pr.get('text')}{default}")
    print(f"  queue:      running {q.get('running') or '-'}, waiting {len(q.get('waiting', []))}"
          f"/{q.get('max_queue')} {' '.join(q.get('waiting', []))}")
    return 0


def _logs(args: argparse.Namespace) -> int:
    common.apply_dirs(args)
    path = paths.log_file()
    if not path.exists():
        print(f"dfi: no log yet at {path}", file=sys.stderr)
        return 1
    lines = path.read_text(errors="replace").splitlines()
    print("\n".join(lines[-args.lines:]) if args.lines > 0 else "\n".join(lines))
    if args.follow:
        with open(path, errors="replace") as f:
            f.seek(0, 2)
            try:
                while True:
                    line = f.readline()
                    if line:
                        print(line, end="", flush=True)
                    else:
                        time.sleep(0.3)
            except KeyboardInterrupt:
                return 0
    return 0


def _keys(args: argparse.Namespace) -> int:
    """CURVE key pairs for remote use: the server's and one client's, in the layout --curve-dir expects."""
    from ..server.auth import ensure_keys

    folder = Path(args.dir)
    if (folder / "server.key_secret").exists():
        print(f"dfi: {folder}/server.key_secret exists; keeping it")
    ensure_keys(folder, args.client)
    secret, clients = folder / f"{args.client}.key_secret", folder / "clients"
    print(f"server keys:  {folder}/server.key (public, give to clients), server.key_secret (keep on the server)")
    print(f"client keys:  {secret} (give to the client), public part authorised in {clients}/")
    print(f"daemon:       dfi daemon start --endpoint tcp://0.0.0.0:5557 --curve-dir {folder}")
    print(f"client:       DFI_CURVE_SERVER_KEY={folder}/server.key DFI_CURVE_CLIENT_KEY={secret} "
          "dfi edit --endpoint tcp://HOST:5557 ...")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("daemon", help="start, stop or inspect the resident daemon")
    dsub = p.add_subparsers(dest="daemon_command", required=True, metavar="ACTION")
    s = dsub.add_parser("start", help="start the daemon (detached unless --foreground)")
    s.add_argument("--foreground", action="store_true", help="run in this terminal, logging to it too")
    common.add_connection_options(s)
    s.set_defaults(func=_start)
    s = dsub.add_parser("stop", help="ask the daemon to shut down")
    common.add_connection_options(s, autostart=False)
    s.set_defaults(func=_stop)
    s = dsub.add_parser("status", help="device, memory, weights, neighbours and queue (exit 3 if not running)")
    common.add_connection_options(s, autostart=False)
    s.set_defaults(func=_status)
    s = dsub.add_parser("logs", help="print the daemon's log")
    s.add_argument("-n", "--lines", type=int, default=50, help="last N lines (0 = all)")
    s.add_argument("-f", "--follow", action="store_true", help="keep printing new lines")
    common.add_connection_options(s, autostart=False)
    s.set_defaults(func=_logs)
    s = dsub.add_parser("keys", help="create CURVE keys for remote (non-loopback TCP) use")
    s.add_argument("--dir", required=True, help="folder for the keys (becomes --curve-dir)")
    s.add_argument("--client", default="client", help="name of the client key pair")
    s.set_defaults(func=_keys)
