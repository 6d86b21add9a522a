"""The daemon's settings: one dataclass, its command-line options and start-up errors.

Light on purpose (stdlib + the wire protocol): ``dfi daemon start`` and every CLI
command that may auto-start a daemon add these options without importing torch.
"""

from __future__ import annotations

import argparse
import math
import os
from dataclasses import dataclass

from dfi_wire import protocol as P

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_RUNNING = 0, 1, 2, 3
MAX_MESSAGE_MB = 2048  # clients decode replies of up to 2 GiB (msgpack bin32 allows 4)
MAX_CLIENT_TIMEOUT_S = 86_400.0  # a day: the front door holds a silent client's final reply this long
MESSAGE_MB_RANGE = f"a number from 0.001 to {MAX_MESSAGE_MB} (MiB)"
CLIENT_TIMEOUT_RANGE = f"a number from 0.5 to {MAX_CLIENT_TIMEOUT_S:g} (seconds)"
MAX_SESSION_MB = 1 << 20  # a TiB: more than any machine holds, so only typos are refused
MAX_SESSION_IDLE_S = 7 * 86_400.0
SESSION_MB_RANGE = f"a number above 0, up to {MAX_SESSION_MB} (MiB)"
SESSION_IDLE_RANGE = f"a number above 0, up to {MAX_SESSION_IDLE_S:g} (seconds)"


class StartError(Exception):
    """The daemon cannot start; the message says why and what to do."""

    def __init__(self, message: str, exit_code: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass
class Config:
    endpoint: str
    weights: str = "auto"
    device: str = "auto"
    compute: str = "auto"
    work_size: int = -1  # -1 = the device's default; 0 = the database's own resolution
    database: str = "auto"
    threads: int = 0  # 0 = torch's default
    max_queue: int = 8
    max_pixels: int = P.DEFAULT_MAX_PIXELS
    max_message_bytes: int = 32 * 1024 * 1024
    client_timeout_s: float = P.DEFAULT_CLIENT_TIMEOUT_S
    session_bytes: int = 256 * 2**20  # live-preview sessions kept within this many bytes (LRU)
    session_idle_s: float = 600.0  # a live-preview session unused this long is dropped
    curve_dir: str | None = None
    warm_up: bool = True
    foreground: bool = True
    auto_started: bool = False  # started by a command that needed it, not by 'dfi daemon start'


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Daemon options, shared by ``python -m dfi_daemon.server`` and ``dfi daemon start``."""
    env = os.environ.get
    p.add_argument("--weights", default=env("DFI_WEIGHTS", "auto"),
                   help="feature network: auto | torchvision | gatys | vgg16-hed | random[:SEED] | PATH "
                        "(env DFI_WEIGHTS; auto = VGG-19 if its file is cached, else vgg16-hed)")
    p.add_argument("--device", default=env("DFI_DEVICE", "auto"),
                   help="auto (CUDA, then Apple MPS, then CPU) | cpu | cuda | cuda:N | mps (env DFI_DEVICE)")
    p.add_argument("--compute", default=env("DFI_COMPUTE", "auto"),
                   help="how the network computes: auto (the device's measured best) | fp32 | channels-last | bf16 "
                        "| channels-last+bf16 (env DFI_COMPUTE; see docs/performance.md)")
    p.add_argument("--work-size", type=int, default=env("DFI_WORK_SIZE", "-1"),
                   help="largest side (px) an aligned face is edited at: the face's own scale up to this; "
                        "0 = the database's resolution, -1 = the device's default (CPU 256, GPU 1024)")
    p.add_argument("--database", default=env("DFI_DATABASE", "auto"),
                   help="neighbour source: PATH of a face database | auto (the one 'dfi db fetch lfw' made, if any) "
                        "| synthetic (offline smoke test) | none (env DFI_DATABASE)")
    p.add_argument("--threads", type=int, default=env("DFI_THREADS", "0"),
                   help="CPU threads for torch (0 = default)")
    p.add_argument("--max-queue", type=int, default=8, help="jobs that may wait behind the running one")
    p.add_argument("--max-pixels", type=int, default=P.DEFAULT_MAX_PIXELS, help="largest image accepted")
    p.add_argument("--max-message-mb", type=float, default=32.0, help="largest message accepted (MiB)")
    # string defaults from the environment go through ``type`` too: a bad one is a usage error, not a traceback
    p.add_argument("--client-timeout", type=float, default=env("DFI_CLIENT_TIMEOUT", str(P.DEFAULT_CLIENT_TIMEOUT_S)),
                   help="cancel a job whose client sent no heartbeat for this many seconds")
    p.add_argument("--session-mb", type=float, default=256.0,
                   help="memory for live-preview sessions (MiB); the least recently used go first beyond it")
    p.add_argument("--session-idle-s", type=float, default=600.0,
                   help="drop a live-preview session unused for this many seconds")
    p.add_argument("--curve-dir", default=env("DFI_CURVE_DIR"),
                   help="folder with server.key_secret and clients/*.key: CURVE for remote TCP use")
    p.add_argument("--no-warm-up", dest="warm_up", action="store_false", help="skip the warm-up pass")
    p.add_argument("--auto-started", action="store_true", help=argparse.SUPPRESS)


def validate(cfg: Config) -> None:
    """Refuse numbers that would start a daemon which refuses everything, or never lets go of anything."""
    checks = [("--max-queue", cfg.max_queue, 0, None, "0 or more"),
              ("--max-pixels", cfg.max_pixels, 1, None, "at least 1"),
              ("--max-message-mb", cfg.max_message_bytes, 1024, MAX_MESSAGE_MB * 2**20, MESSAGE_MB_RANGE),
              ("--client-timeout", cfg.client_timeout_s, 0.5, MAX_CLIENT_TIMEOUT_S, CLIENT_TIMEOUT_RANGE),
              ("--threads", cfg.threads, 0, None, "0 (torch's default) or more"),
              ("--work-size", cfg.work_size, -1, None, "-1 (the device's default), 0 or a side in pixels")]
    for flag, value, low, high, what in checks:
        if not math.isfinite(value) or value < low or (high is not None and value > high):  # NaN fails isfinite
            shown = value / 2**20 if flag == "--max-message-mb" else value
            raise StartError(f"{flag} {shown:g} is not usable: it must be {what}.", EXIT_USAGE)
    if cfg.max_pixels < P.MIN_SIDE**2:
        raise StartError(f"--max-pixels {cfg.max_pixels} is below the smallest image ({P.MIN_SIDE}x{P.MIN_SIDE}).",
                         EXIT_USAGE)


def _number(flag: str, value: float, low: float, high: float, what: str) -> float:
    """A float option checked before any arithmetic: ``int(nan)`` and ``int(inf)`` raise, and an infinite
    timeout would keep every final reply and every silent client's job for ever."""
    if not math.isfinite(value) or not low <= value <= high:
        raise StartError(f"{flag} {value:g} is not usable: it must be {what}.", EXIT_USAGE)
    return value


def _positive(flag: str, value: float, high: float, what: str) -> float:
    """A float option that must be above 0 (a budget or a time of 0 would keep nothing at all)."""
    if not math.isfinite(value) or not 0 < value <= high:
        raise StartError(f"{flag} {value:g} is not usable: it must be {what}.", EXIT_USAGE)
    return value


def config_from_args(args: argparse.Namespace, endpoint: str, foreground: bool) -> Config:
    """The settings of parsed options; a float out of its range is a StartError (one line, no traceback)."""
    return Config(endpoint=endpoint, weights=args.weights, device=args.device, compute=args.compute,
                  work_size=args.work_size,
                  database=args.database,
                  threads=args.threads, max_queue=args.max_queue, max_pixels=args.max_pixels,
                  max_message_bytes=int(_number("--max-message-mb", args.max_message_mb, 2**-10, MAX_MESSAGE_MB,
                                                MESSAGE_MB_RANGE) * 2**20),
                  client_timeout_s=_number("--client-timeout", args.client_timeout, 0.5, MAX_CLIENT_TIMEOUT_S,
                                           CLIENT_TIMEOUT_RANGE),
                  session_bytes=max(1, int(_positive("--session-mb", args.session_mb, MAX_SESSION_MB,
                                                     SESSION_MB_RANGE) * 2**20)),
                  session_idle_s=_positive("--session-idle-s", args.session_idle_s, MAX_SESSION_IDLE_S,
                                           SESSION_IDLE_RANGE),
                  curve_dir=args.curve_dir, warm_up=args.warm_up, foreground=foreground,
                  auto_started=bool(getattr(args, "auto_started", False)))
