"""Resolving pretrained weights: explicit path, standard caches, hub download, random (flagged).

Every pretrained network is resolved here, in this order:

1. an explicit local path (protocol option or argument); a path that was given but does not exist is
   a `UserError` (a typo must not silently pick up another copy from the cache, or random weights);
2. the standard caches: `$TORCH_HOME/hub/checkpoints/<exact file name>` for torch-hub files, the
   Hugging Face hub cache for hub ids (`HF_HOME`, `HF_HUB_CACHE`);
3. a download, only when the network is reachable (never attempted with `HF_HUB_OFFLINE=1` or
   `ACBENCH_OFFLINE=1`);
4. random initialisation, only when the policy allows it (`random`, or `pretrained-or-random`
   when nothing was found) — and then the resolution says so, and every report built from it
   carries a "random weights — not comparable" mark.

If nothing works under the `pretrained` policy, a `UserError` names the weight, where it looked,
and how to provide it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from acbench.errors import UserError

log = logging.getLogger(__name__)

Policy = Literal["pretrained", "pretrained-or-random", "random"]
POLICIES: tuple[str, ...] = ("pretrained", "pretrained-or-random", "random")
RANDOM_MARK = "random weights — not comparable"


@dataclass(frozen=True)
class Resolution:
    """Where a weight came from. `path` is None for random or for a hub id left to the library."""

    name: str
    source: Literal["path", "cache", "download", "random"]
    path: str | None = None

    @property
    def is_random(self) -> bool:
        return self.source == "random"

    def as_dict(self) -> dict:
        return asdict(self)


def offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get("ACBENCH_OFFLINE") == "1"


def torch_home() -> Path:
    if "TORCH_HOME" in os.environ:
        return Path(os.environ["TORCH_HOME"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME", "~/.cache")
    return Path(xdg).expanduser() / "torch"


def _random(name: str, why: str) -> Resolution:
    log.warning("RANDOM WEIGHTS for %s (%s): results are not comparable to published numbers", name, why)
    return Resolution(name, "random")


def _check_policy(policy: str) -> None:
    if policy not in POLICIES:
        raise UserError(f"weights policy '{policy}' is unknown; use one of {', '.join(POLICIES)}")


def _random_or_explicit(name: str, policy: str, explicit: str | Path | None,
                        exists: Callable[[Path], bool]) -> Resolution | None:
    """The first steps of every resolution: check the policy, honour `random`, then an explicit path."""
    _check_policy(policy)
    if policy == "random":
        return _random(name, "asked for")
    if explicit is not None:
        path = Path(explicit).expanduser()
        if exists(path):
            return Resolution(name, "path", str(path))
        raise UserError(f"weights '{name}': the path {path} given for them does not exist (or is not a "
                        f"{'folder' if exists is Path.is_dir else 'file'}); correct it, or remove it to use "
                        "the standard caches")
    return None


def resolve_torch_hub_file(name: str, filename: str, url: str | None, policy: Policy = "pretrained",
                           explicit: str | Path | None = None) -> Resolution:
    """A torch-hub checkpoint file (AlexNet, VGG, FID-Inception, ResNet …) by its exact file name."""
    tried: list[str] = []
    early = _random_or_explicit(name, policy, explicit, Path.is_file)
    if early is not None:
        return early
    cached = torch_home() / "hub" / "checkpoints" / filename
    if cached.is_file():
        return Resolution(name, "cache", str(cached))
    tried.append(str(cached))
    if url and not offline():
        try:
            from torch.hub import download_url_to_file

            cached.parent.mkdir(parents=True, exist_ok=True)
            download_url_to_file(url, str(cached), progress=False)
            return Resolution(name, "download", str(cached))
        except Exception as exc:  # no network: fall through to the policy decision
            tried.append(f"download from {url} failed ({exc.__class__.__name__})")
    if policy == "pretrained-or-random":
        return _random(name, "no file found")
    raise UserError(f"weights '{name}' not found (looked in: {'; '.join(tried)}); "
                    f"place {filename} in {cached.parent} or pass its path")


def resolve_hf(name: str, repo_id: str, policy: Policy = "pretrained", explicit: str | Path | None = None,
               subfolder: str | None = None) -> Resolution:
    """A Hugging Face model folder: explicit local folder, the hub cache, or a download."""
    tried: list[str] = []
    early = _random_or_explicit(name, policy, explicit, Path.is_dir)
    if early is not None:
        return early
    try:
        from huggingface_hub import snapshot_download

        folder = snapshot_download(repo_id, local_files_only=True)
        return Resolution(name, "cache", folder)
    except Exception:
        tried.append(f"hub cache for '{repo_id}'")
    if not offline():
        try:
            from huggingface_hub import snapshot_download

            folder = snapshot_download(repo_id, etag_timeout=10)
            return Resolution(name, "download", folder)
        except Exception as exc:
            tried.append(f"download of '{repo_id}' failed ({exc.__class__.__name__})")
    if policy == "pretrained-or-random":
        return _random(name, "not found")
    raise UserError(f"weights '{name}' not found (looked in: {'; '.join(tried)}); download '{repo_id}' "
                    f"with `huggingface-cli download {repo_id}` or give a local folder")


def resolve_hf_file(name: str, repo_id: str, filenames: tuple[str, ...], policy: Policy = "pretrained",
                    explicit: str | Path | None = None) -> Resolution:
    """One file of a Hugging Face repository (the first of `filenames` found): an explicit file, or a
    local copy of the repository holding it, the hub cache, or a download of that file only."""
    tried: list[str] = []

    def exists(path: Path) -> bool:
        return path.is_file() or any((path / f).is_file() for f in filenames)

    early = _random_or_explicit(name, policy, explicit, exists)
    if early is not None:
        if early.path is not None and Path(early.path).is_dir():
            found = next(Path(early.path) / f for f in filenames if (Path(early.path) / f).is_file())
            return Resolution(name, "path", str(found))
        return early
    try:
        from huggingface_hub import hf_hub_download
    except ImportError:  # pragma: no cover - huggingface_hub ships with transformers
        hf_hub_download = None
    if hf_hub_download is not None:
        for filename in filenames:
            try:
                return Resolution(name, "cache", hf_hub_download(repo_id, filename, local_files_only=True))
            except Exception:
                tried.append(f"hub cache for '{repo_id}/{filename}'")
        if not offline():
            try:
                return Resolution(name, "download", hf_hub_download(repo_id, filenames[0], etag_timeout=10))
            except Exception as exc:
                tried.append(f"download of '{repo_id}/{filenames[0]}' failed ({exc.__class__.__name__})")
    if policy == "pretrained-or-random":
        return _random(name, "not found")
    raise UserError(f"weights '{name}' not found (looked in: {'; '.join(tried)}); download it with "
                    f"`huggingface-cli download {repo_id} {filenames[0]}` or give its path")


# --------------------------------------------------------------------------------------------- #
# The feature networks of the generation-quality metrics, by their exact torch-hub file names.

#: torchvision ImageNet backbones that `lpips` 0.1.4 loads under its `net=` names.
LPIPS_BACKBONE_FILES: dict[str, str] = {
    "alex": "alexnet-owt-7be5be79.pth",
    "vgg": "vgg16-397923af.pth",
    "squeeze": "squeezenet1_1-b8a52dc0.pth",
}
TORCHVISION_MODELS_URL = "https://download.pytorch.org/models/"
#: The TF 2015-12-05 InceptionV3 converted by torch-fidelity (used by torch-fidelity and torchmetrics).
FID_INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"
FID_INCEPTION_URL = "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/" + FID_INCEPTION_FILE


def resolve_lpips_backbone(net: str, policy: Policy = "pretrained",
                           explicit: str | Path | None = None) -> Resolution:
    """The ImageNet trunk of LPIPS (`alex`, `vgg` or `squeeze`); the linear heads ship with `lpips`."""
    if net not in LPIPS_BACKBONE_FILES:
        raise UserError(f"LPIPS backbone '{net}' is unknown; use one of {', '.join(LPIPS_BACKBONE_FILES)}")
    filename = LPIPS_BACKBONE_FILES[net]
    return resolve_torch_hub_file(f"lpips-{net}", filename, TORCHVISION_MODELS_URL + filename, policy, explicit)


def resolve_fid_inception(policy: Policy = "pretrained", explicit: str | Path | None = None) -> Resolution:
    """The FID-InceptionV3 of IS, FID and KID."""
    return resolve_torch_hub_file("fid-inception-v3", FID_INCEPTION_FILE, FID_INCEPTION_URL, policy, explicit)
