"""What a daemon's processes hold, read from /proc: its front door's pid and resident memory.

The transport tests bound what one peer can make the daemon hold; they measure it here, from
outside, as an operator would (``ps``), not from the daemon's own accounting.
"""

from __future__ import annotations

from pathlib import Path

from helpers.daemon_process import DaemonProcess


def front_pid(d: DaemonProcess) -> int | None:
    """The pid of the daemon's front door (its child owning the public socket), or None between two."""
    for c in Path(f"/proc/{d.pid}/task/{d.pid}/children").read_text().split():
        try:
            if b"dfi_daemon.server.front" in Path(f"/proc/{c}/cmdline").read_bytes():
                return int(c)
        except OSError:
            pass
    return None


def rss_mb(pid: int) -> float:
    """Resident memory of one process in MiB; 0 once it is gone."""
    try:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except FileNotFoundError:
        pass
    return 0.0  # gone, or a zombie waiting to be reaped


def tree_rss_mb(pid: int) -> float:
    """The daemon and its front door together."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return rss_mb(pid) + sum(rss_mb(int(c)) for c in children)
