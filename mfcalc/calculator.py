"""MFCalculator: an ASE calculator on a TorchScript mfcalc model, fidelity picked at run time.

Only the model file is needed (loading goes through :mod:`mfcalc.export`; no training code
is imported).  Energies are in eV, forces in eV/Angstrom (``-dE/dx`` by autograd, so MD
conserves energy), stress in eV/Angstrom^3 for periodic cells (strain derivative).

The member spread of an ensemble is in ``calc.results`` too (zeros for a single model,
which is an ensemble of one):

* ``energy_std``: standard deviation of the members' energies, eV;
* ``forces_std``: (N, 3) standard deviation of the members' forces, eV/Angstrom.

Everything comes from one call of the model's ``compute`` (:mod:`mfcalc.model.grad` does
the differentiation), whatever the ensemble size and whether stress is asked for.

Per-call work is kept small for MD of small molecules: atomic numbers, structure index and
cell are converted once and reused; the pair list is built with a skin and reused until
some atom has moved more than half of it (pairs beyond the cutoff contribute exactly 0).
"""

from __future__ import annotations

import os
import warnings
from typing import Any, Dict, Optional, Sequence, Union

import numpy as np
import torch
from ase.calculators.calculator import Calculator, PropertyNotImplementedError, all_changes
from ase.stress import full_3x3_to_voigt_6_stress

from mfcalc import export, keys
from mfcalc.data.fidelity import head_index
from mfcalc.device import resolve_device
from mfcalc.elements import check_elements
from mfcalc.model.ensemble import Ensemble
from mfcalc.model.hipnn import MultiFidelityHipnn
from mfcalc.models import default_model_path
from mfcalc.neighbors import neighbor_pairs

ModelLike = Union[str, "os.PathLike[str]", torch.nn.Module, None]


class MFCalculator(Calculator):
    """ASE calculator for multi-fidelity mfcalc models.

    Args:
        model: path of a ``model.pt`` from ``mfcalc-train``, an already loaded model
            (TorchScript or eager), or ``None`` for the default model shipped with mfcalc.
        fidelity: head to use, e.g. ``"cc"``; ``None`` takes the model's default (the last
            fidelity it was trained with). Change it later with ``calc.fidelity = "dft"``.
        device: ``"auto"`` (CUDA when present), ``"cpu"``, ``"cuda"``.
        dtype: ``None`` keeps the model's dtype; ``"float64"`` is worth it for NVE MD and
            tight optimisations.
        skin: Angstrom added to the cutoff for the reusable pair list (0 rebuilds every call).
        neighbor_backend: ``"auto"``, ``"torch"`` or ``"cluster"`` (torch-cluster).
        spread_warning: warn when the ensemble energy spread exceeds this many eV; ``None``
            takes the model file's documented threshold (``spread_warning_ev``), if any.
        freeze: TorchScript-freeze the model (weights become constants; ~1.5x faster per
            call for small molecules).  ``calc.model`` is then inference-only.

    Raises:
        FileNotFoundError: no such model file (or no default model shipped).
        ValueError: not an mfcalc model file, unknown fidelity (lists the known ones), bad device.
    """

    implemented_properties = ["energy", "free_energy", "forces", "stress", "energy_std", "forces_std"]
    default_parameters: Dict[str, Any] = {}

    def __init__(
        self,
        model: ModelLike = None,
        fidelity: Optional[str] = None,
        device: str = "auto",
        dtype: Optional[str] = None,
        skin: float = 0.5,
        neighbor_backend: str = "auto",
        spread_warning: Optional[float] = None,
        freeze: bool = True,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.device = resolve_device(device)
        if model is None:
            path = default_model_path()
            if not os.path.exists(path):
                raise FileNotFoundError(
                    f"no default model is shipped at {path}; pass the path of a model.pt written by mfcalc-train"
                )
            model = path
        module: Any  # an mfcalc model: TorchScript or eager, with ``compute``
        meta: Dict[str, Any]
        if isinstance(model, (str, os.PathLike)):
            module, meta = export.load(os.fspath(model), device=self.device)
        elif isinstance(model, MultiFidelityHipnn):
            module, meta = Ensemble([model]), {}  # a single model is an ensemble of one
        elif isinstance(model, torch.nn.Module):
            module, meta = model, {}
        else:
            raise ValueError(f"model must be a path or a torch module, got {type(model).__name__}")
        self.metadata: Dict[str, Any] = meta
        self.fidelities = tuple(str(f) for f in (meta.get(keys.META_FIDELITIES) or module.fidelities))
        self.species = tuple(int(z) for z in (meta.get(keys.META_SPECIES) or module.species))
        self.cutoff = float(meta.get(keys.META_CUTOFF) or module.cutoff)
        self.n_members = int(meta.get(keys.META_ENSEMBLE_SIZE, getattr(module, "n_members", 1)))
        model_dtype = next(module.parameters()).dtype
        self.dtype = {"float32": torch.float32, "float64": torch.float64, None: model_dtype}.get(dtype)
        if self.dtype is None:
            raise ValueError(f"dtype must be None, 'float32' or 'float64', got {dtype!r}")
        module = module.to(device=self.device, dtype=self.dtype).eval()
        for p in module.parameters():
            p.requires_grad_(False)
        self.model: Any = export.freeze(module) if freeze else module  # TorchScript or eager: has ``compute``
        self.skin = float(skin)
        self.neighbor_backend = neighbor_backend
        self.spread_warning = spread_warning if spread_warning is not None else meta.get(keys.META_SPREAD_WARNING)
        self._fidelity_index = -1
        default = meta.get(keys.META_DEFAULT_FIDELITY) or (self.fidelities[-1] if len(self.fidelities) == 1 else None)
        if fidelity is None and default is None:
            raise ValueError(f"this model has several fidelities; choose one: {', '.join(self.fidelities)}")
        self.fidelity = str(fidelity if fidelity is not None else default)
        self._cache_key: Optional[tuple] = None
        self._pairs: Optional[tuple] = None

    # ---- fidelity --------------------------------------------------------------------------
    @property
    def fidelity(self) -> str:
        return self.fidelities[self._fidelity_index]

    @fidelity.setter
    def fidelity(self, name: str) -> None:
        index = head_index(list(self.fidelities), name)
        if self._fidelity_index != index:
            self._fidelity_index = index
            self.reset()  # cached results belong to the old head

    # ---- input checks and cached tensors ----------------------------------------------------
    def _static(self, atoms):
        """Checks and tensors that change only when numbers, cell or pbc change (MD and
        optimisation change only positions: nothing here is redone per step)."""
        key = (atoms.numbers.tobytes(), atoms.cell.array.tobytes(), atoms.pbc.tobytes())
        if key != self._cache_key:
            check_elements(atoms.numbers, self.species)
            if atoms.pbc.any() and abs(np.linalg.det(atoms.cell.array)) < 1e-9:
                raise ValueError("periodic atoms need a cell with non-zero volume")
            self._cache_key = key
            self._numbers = torch.as_tensor(atoms.numbers, dtype=torch.long, device=self.device)
            self._mol = torch.zeros(len(atoms), dtype=torch.long, device=self.device)
            self._cell = torch.as_tensor(atoms.cell.array, dtype=self.dtype, device=self.device)[None]
            self._pbc = torch.as_tensor(atoms.pbc, dtype=torch.bool, device=self.device)[None]
            self._pairs = None
        return self._numbers, self._mol, self._cell, self._pbc

    def _pair_list(self, positions: torch.Tensor, cell, pbc):
        """Pairs within cutoff + skin, rebuilt only after an atom moved more than skin / 2."""
        if self._pairs is not None and self.skin > 0:
            moved = (positions - self._pairs[3]).norm(dim=1).max() if len(positions) else 0.0
            if float(moved) < 0.5 * self.skin:
                return self._pairs[:3]
        periodic = bool(pbc.any())
        pf, ps, sh = neighbor_pairs(
            positions,
            self._mol,
            1,
            self.cutoff + self.skin,
            cell if periodic else None,
            pbc if periodic else None,
            backend=self.neighbor_backend,
        )
        self._pairs = (pf, ps, sh.to(self.dtype), positions.detach().clone())
        return self._pairs[:3]

    # ---- ASE entry point ----------------------------------------------------------------------
    def calculate(self, atoms=None, properties: Sequence[str] = ("energy",), system_changes=all_changes) -> None:
        super().calculate(atoms, properties, system_changes)
        atoms = self.atoms
        numbers, mol, cell, pbc = self._static(atoms)
        if not np.isfinite(atoms.positions).all():
            raise ValueError("atoms.positions contain NaN or infinite values")
        periodic = bool(atoms.pbc.any())
        want_stress = "stress" in properties
        if want_stress and not atoms.pbc.all():
            raise PropertyNotImplementedError("stress needs a cell periodic in all three directions")
        positions = torch.as_tensor(atoms.positions, dtype=self.dtype, device=self.device)
        pf, ps, shifts = self._pair_list(positions, cell, pbc)
        out = self.model.compute(
            numbers,
            positions,
            mol,
            1,
            self._fidelity_index,
            cell if periodic else None,
            pbc if periodic else None,
            pf,
            ps,
            shifts,
            True,
            want_stress,
        )
        results: Dict[str, Any] = {
            "energy": float(out[keys.ENERGY][0].detach()),
            "forces": out[keys.FORCES].detach().cpu().numpy().astype(np.float64),
            "energy_std": float(out[keys.ENERGY_STD][0].detach()),
            "forces_std": out[keys.FORCES_STD].detach().cpu().numpy().astype(np.float64),
        }
        if self.spread_warning is not None and results["energy_std"] > self.spread_warning:
            warnings.warn(
                f"ensemble energy spread {results['energy_std']:.3f} eV exceeds "
                f"{self.spread_warning} eV: this structure is outside the model's training domain",
                stacklevel=2,
            )
        if want_stress:
            stress = out[keys.STRESS][0].detach().cpu().numpy().astype(np.float64)
            results["stress"] = full_3x3_to_voigt_6_stress(stress)
        results["free_energy"] = results["energy"]
        self.results.update(results)
