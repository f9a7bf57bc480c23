"""The model file: one TorchScript file carrying its own JSON metadata.  Save and load, nothing else.

``torch.jit.load(path)`` works without mfcalc installed; the metadata (fidelities, species,
cutoff, units, reference energies, training summary, metrics) rides in the file's
``_extra_files`` under :data:`mfcalc.keys.METADATA_FILE`.
"""

from __future__ import annotations

import copy
import datetime
import json
import os
import warnings
from typing import Any, Dict, Optional, Tuple

import torch

from mfcalc import keys
from mfcalc.files import atomic_write
from mfcalc.model.ensemble import Ensemble
from mfcalc.model.hipnn import MultiFidelityHipnn
from mfcalc.model.settings import ModelSettings


def build_metadata(
    model: Ensemble,
    training: Optional[Dict[str, Any]] = None,
    metrics: Optional[Dict[str, Any]] = None,
    domain: Optional[Dict[str, Any]] = None,
) -> Dict[str, Any]:
    """Metadata for a model file, read off the model itself plus optional summaries.

    ``domain`` describes what the training structures covered (elements, heavy-atom counts);
    the conformer search warns before optimising a molecule outside it.
    """
    from mfcalc import __version__

    level0 = model.reference_energies().double().cpu()  # (F, n_species), frozen
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
        keys.META_HPARAMS: json.loads(model.hparams),
        keys.META_VERSION: __version__,
        keys.META_TRAINING: training or {},
        keys.META_METRICS: metrics or {},
        keys.META_DOMAIN: domain or {},
        keys.META_CREATED: datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def save(model: Ensemble, path: str, metadata: Dict[str, Any]) -> None:
    """Script ``model`` and write it with ``metadata`` atomically (temp file, then rename)."""
    _write(torch.jit.script(model.cpu().eval()), path, metadata)


def _write(scripted: torch.jit.ScriptModule, path: str, metadata: Dict[str, Any]) -> None:
    extra = {keys.METADATA_FILE: json.dumps(metadata, indent=1)}
    atomic_write(path, lambda tmp: torch.jit.save(scripted, tmp, _extra_files=extra))


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
    if int(meta.get(keys.META_FORMAT_VERSION, 0)) < keys.MODEL_FORMAT_VERSION:
        # an older file: same weights, today's code (rescript saves it)
        module = torch.jit.script(eager_model(module, meta, path)).to(device)
    module.eval()
    return module, meta


def eager_model(module: torch.nn.Module, meta: Dict[str, Any], path: str) -> Ensemble:
    """The eager (trainable) ensemble of a loaded model file, built from its recorded
    hyper-parameters and weights; older file formats are converted here."""
    hparams = {**ModelSettings.later_defaults(), **(meta.get(keys.META_HPARAMS) or {})}
    needed = set(ModelSettings.architecture_fields()) | {"species", "fidelities"}
    missing = sorted(needed - set(hparams))
    if missing:  # a default filled in today could differ from the one the weights were trained with
        raise ValueError(
            f"{path}: cannot rebuild the model with this mfcalc, the file does not record the "
            f"hyper-parameters {missing}"
        )
    dtype = next(module.parameters()).dtype
    members = [MultiFidelityHipnn(**hparams).to(dtype) for _ in range(int(meta.get(keys.META_ENSEMBLE_SIZE, 1)))]
    state = {k: v.cpu() for k, v in module.state_dict().items()}
    if any(k.startswith("members.") for k in state):  # format <= 2: the members one by one
        for n, member in enumerate(members):
            prefix = f"members.{n}."
            wanted = member.state_dict()  # scripted files also list non-persistent buffers (species_table)
            member.load_state_dict(
                {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix) and k[len(prefix) :] in wanted}
            )
        return Ensemble(members).eval()
    model = Ensemble(members)
    wanted = model.state_dict()
    model.load_state_dict({k: v for k, v in state.items() if k in wanted})
    return model.eval()


def update_metadata(path: str, **fields: Any) -> Dict[str, Any]:
    """Add or replace metadata fields of an existing model file (atomically); returns the new metadata."""
    module, meta = load(path)
    meta.update(fields)
    meta[keys.META_FORMAT_VERSION] = keys.MODEL_FORMAT_VERSION  # load() upgraded an older file's code
    _write(module, path, meta)
    return meta


def spread_check(meta: Dict[str, Any]) -> Tuple[Optional[float], Optional[str]]:
    """The ensemble-spread warning threshold (eV) of a model file and the head it applies to.

    The question the warning answers is whether a structure lies in the trunk's training
    domain.  A head trained on few small structures (CCSD(T) energies of 1-4 heavy atoms)
    has members that agree less and less on absolute energies as molecules grow, even well
    inside the trunk's domain (a near-constant offset per molecule, which relative energies
    shed), so its spread would flag every larger molecule.  The threshold is therefore set on,
    and compared with, the head that saw the whole domain (``spread_warning_fidelity``); files
    that name none set it on their default head.
    """
    threshold = meta.get(keys.META_SPREAD_WARNING)
    head = meta.get(keys.META_SPREAD_FIDELITY) or meta.get(keys.META_DEFAULT_FIDELITY)
    return (None if threshold is None else float(threshold)), head


def spread_head_index(meta: Dict[str, Any]) -> Optional[int]:
    """The head index of :func:`spread_check`'s head, or None when the file names no head it has."""
    head = spread_check(meta)[1]
    fidelities = list(meta.get(keys.META_FIDELITIES) or [])
    return fidelities.index(head) if head is not None and head in fidelities else None


def rescript(path: str, out: Optional[str] = None) -> Dict[str, Any]:
    """Re-save a model file with the installed mfcalc's code: same weights, same metadata.

    A TorchScript file carries the code it was saved with, so a model trained with an older
    mfcalc keeps that version's kernels; this rebuilds the eager model from the file's
    hyper-parameters, loads its weights and scripts it again.  Returns the metadata written.
    """
    from mfcalc import __version__

    module, meta = load(path)
    model = eager_model(module, meta, path)
    now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    meta[keys.META_RESCRIPTED] = f"mfcalc {__version__}, {now}"
    meta[keys.META_FORMAT_VERSION] = keys.MODEL_FORMAT_VERSION
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
    methods = [
        m
        for m in ("compute", "energy_and_forces", "energy_forces_spread", "fidelity_index", "inputs")
        if hasattr(module, m)
    ]
    return torch.jit.freeze(module.eval(), preserved_attrs=methods)


def compile_for_inference(module: torch.nn.Module, meta: Dict[str, Any], path: str = "the model") -> Ensemble:
    """The eager ensemble of a loaded model with its network (:meth:`Ensemble.levels`) compiled
    by ``torch.compile`` into fused kernels, for inference.

    For one model, 1.3-2.3x faster per call than the frozen TorchScript model on CPU; no
    consistent gain for a 4-member ensemble (tools/BENCHMARKS.md).  The first call compiles,
    about a minute (cached on disk by PyTorch for later processes).  Shapes are dynamic, so MD, new
    molecules and changing pair counts do not recompile.  The checks and the pair layout
    stay outside the compiled part; forces are still ``-dE/dx`` by autograd through it.

    Raises:
        RuntimeError: no C++ compiler (CPU) or no Triton (CUDA) for ``torch.compile``.
    """
    import shutil

    param = next(module.parameters())
    if param.device.type == "cpu" and not any(shutil.which(c) for c in ("g++", "c++", "clang++")):
        raise RuntimeError("compiling the model on CPU needs a C++ compiler (g++ or clang++) on the PATH")
    if param.device.type == "cuda":
        import importlib.util

        if importlib.util.find_spec("triton") is None:
            raise RuntimeError("compiling the model on CUDA needs Triton (pip install triton)")
    if isinstance(module, Ensemble):
        eager = copy.deepcopy(module)  # the caller's module keeps its own, uncompiled levels
    else:
        meta = dict(meta)
        recorded: Any = module  # a scripted Ensemble keeps its attributes
        meta.setdefault(keys.META_HPARAMS, json.loads(recorded.hparams))
        meta.setdefault(keys.META_ENSEMBLE_SIZE, int(recorded.n_members))
        eager = eager_model(module, meta, path).to(device=param.device, dtype=param.dtype)
    eager.eval()
    for p in eager.parameters():
        p.requires_grad_(False)
    compiled = torch.compile(eager.levels, dynamic=True, fullgraph=True)

    def levels(*args):
        with warnings.catch_warnings():  # Dynamo reads .grad of non-leaf inputs while tracing
            warnings.filterwarnings("ignore", message="The .grad attribute of a Tensor that is not a leaf")
            return compiled(*args)

    eager.levels = levels  # type: ignore[method-assign]
    return eager
