"""The model file: one TorchScript file carrying its own JSON metadata.  Save and load, nothing else.

``torch.jit.load(path)`` works without mfcalc installed; the metadata (fidelities, species,
cutoff, units, reference energies, training summary, metrics) rides in the file's
``_extra_files`` under :data:`mfcalc.keys.METADATA_FILE`.
"""

from __future__ import annotations

import datetime
import inspect
import json
import os
import tempfile
from typing import Any, Dict, Optional, Tuple

import torch

from mfcalc import keys
from mfcalc.model.ensemble import Ensemble
from mfcalc.model.hipnn import MultiFidelityHipnn


def build_metadata(model: Ensemble, training: Optional[Dict[str, Any]] = None,
                   metrics: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """Metadata for a model file, read off the model itself plus optional summaries."""
    from mfcalc import __version__

    first = model.members[0]
    level0 = first.heads.levels[0].weight.detach().double().cpu()  # (F, n_species), frozen
    return {
        keys.META_FORMAT: keys.MODEL_FORMAT,
        keys.META_FORMAT_VERSION: keys.MODEL_FORMAT_VERSION,
        keys.META_FIDELITIES: list(model.fidelities),
        keys.META_DEFAULT_FIDELITY: list(model.fidelities)[-1],  # the last bound (usually the highest) level
        keys.META_SPECIES: list(model.species),
        keys.META_CUTOFF: float(model.cutoff),
        keys.META_ENERGY_UNIT: "eV",
        keys.META_LENGTH_UNIT: "Angstrom",
        keys.META_REFERENCE_ENERGIES: {
            fid: {str(z): float(level0[k, s]) for s, z in enumerate(model.species)}
            for k, fid in enumerate(model.fidelities)
        },
        keys.META_ENSEMBLE_SIZE: int(model.n_members),
        keys.META_DTYPE: str(next(model.parameters()).dtype).replace("torch.", ""),
        keys.META_HPARAMS: json.loads(first.hparams),
        keys.META_VERSION: __version__,
        keys.META_TRAINING: training or {},
        keys.META_METRICS: metrics or {},
        keys.META_CREATED: datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def save(model: Ensemble, path: str, metadata: Dict[str, Any]) -> None:
    """Script ``model`` and write it with ``metadata`` atomically (temp file, then rename)."""
    scripted = torch.jit.script(model.cpu().eval())
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".model-", suffix=".pt.tmp", dir=directory)
    os.close(fd)
    try:
        torch.jit.save(scripted, tmp, _extra_files={keys.METADATA_FILE: json.dumps(metadata, indent=1)})
        os.chmod(tmp, 0o644)  # mkstemp makes it private; a model file is meant to be shared
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def load(path: str, device: str | torch.device = "cpu") -> Tuple[torch.jit.ScriptModule, Dict[str, Any]]:
    """Load a model file; returns the scripted model (eval mode, on ``device``) and its metadata.

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is not an mfcalc TorchScript model (names the file and why).
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"model file not found: {path}")
    extra = {keys.METADATA_FILE: ""}
    try:
        module = torch.jit.load(path, map_location=device, _extra_files=extra)
    except Exception as exc:  # torch raises RuntimeError/ValueError variants for non-TorchScript files
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"{path} is not a TorchScript model file ({first_line})") from None
    raw = extra[keys.METADATA_FILE]
    if not raw:
        raise ValueError(f"{path} is a TorchScript file but not an mfcalc model (no {keys.METADATA_FILE})")
    meta = json.loads(raw)
    if meta.get(keys.META_FORMAT) != keys.MODEL_FORMAT:
        raise ValueError(f"{path}: metadata format {meta.get(keys.META_FORMAT)!r} is not {keys.MODEL_FORMAT!r}")
    if int(meta.get(keys.META_FORMAT_VERSION, 0)) > keys.MODEL_FORMAT_VERSION:
        raise ValueError(f"{path} was written by a newer mfcalc (format {meta[keys.META_FORMAT_VERSION]}); upgrade")
    module.eval()
    return module, meta


def update_metadata(path: str, **fields: Any) -> Dict[str, Any]:
    """Add or replace metadata fields of an existing model file (atomically); returns the new metadata."""
    module, meta = load(path)
    meta.update(fields)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".model-", suffix=".pt.tmp", dir=directory)
    os.close(fd)
    try:
        torch.jit.save(module, tmp, _extra_files={keys.METADATA_FILE: json.dumps(meta, indent=1)})
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return meta


def rescript(path: str, out: Optional[str] = None) -> Dict[str, Any]:
    """Re-save a model file with the installed mfcalc's code: same weights, same metadata.

    A TorchScript file carries the code it was saved with, so a model trained with an older
    mfcalc keeps that version's kernels; this rebuilds the eager model from the file's
    hyper-parameters, loads its weights and scripts it again.  Returns the metadata written.
    """
    from mfcalc import __version__

    module, meta = load(path)
    needed = set(inspect.signature(MultiFidelityHipnn.__init__).parameters) - {"self"}
    missing = sorted(needed - set(meta.get(keys.META_HPARAMS) or {}))
    if missing:  # a default filled in today could differ from the one the weights were trained with
        raise ValueError(f"{path}: cannot rescript, the file does not record the hyper-parameters {missing}")
    members = [MultiFidelityHipnn.from_hparams(json.dumps(meta[keys.META_HPARAMS]))
               for _ in range(int(meta.get(keys.META_ENSEMBLE_SIZE, 1)))]
    model = Ensemble(members).to(next(module.parameters()).dtype)
    wanted = model.state_dict()  # scripted files also list non-persistent buffers (species_table)
    model.load_state_dict({k: v for k, v in module.state_dict().items() if k in wanted})
    now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')
    meta[keys.META_RESCRIPTED] = f"mfcalc {__version__}, {now}"
    save(model, out or path, meta)
    return meta


def freeze(module: torch.nn.Module) -> torch.nn.Module:
    """TorchScript-freeze a loaded model for inference: weights become constants and the
    graph is simplified, which makes small-molecule energy+forces calls about 1.5x faster
    (tools/BENCHMARKS.md).  Gradients with respect to positions and strain still work;
    the frozen model can no longer be trained or moved to another device or dtype, so
    move it first.  Eager modules are returned unchanged.
    """
    if not isinstance(module, torch.jit.ScriptModule):
        return module
    methods = [m for m in ("energy_and_forces", "energy_forces_spread", "fidelity_index") if hasattr(module, m)]
    return torch.jit.freeze(module.eval(), preserved_attrs=methods)
