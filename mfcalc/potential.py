"""One structure in, energy and forces out: the model runner behind every simulation engine.

:class:`Potential` loads a model file (or takes a loaded model), picks a fidelity head, and
evaluates one structure at a time in eV and Angstrom.  ASE (:mod:`mfcalc.calculator`) and
OpenMM (:mod:`mfcalc.openmm`) are thin adapters around it, so both get the same checks,
the same unit conventions and the same per-step economies:

* atomic numbers, structure index and cell are converted and checked once, and again only
  when they change (MD and optimisation change positions only);
* the pair list is built with a skin and reused until some atom has moved more than half
  of it (pairs beyond the cutoff contribute exactly 0, so reuse changes no number);
* one call of the model's ``compute`` gives the energy, the forces (``-dE/dx`` by autograd,
  :mod:`mfcalc.model.grad`), the member spreads and, on request, the stress.
"""

from __future__ import annotations

import copy
import os
import sys
import warnings
from typing import Any, Dict, Optional, Tuple, Union

import numpy as np
import torch

from mfcalc import export, keys
from mfcalc.data.fidelity import head_index
from mfcalc.device import LARGE_SYSTEM_ATOMS, keep_freed_memory, resolve_device
from mfcalc.elements import check_elements, electronic_state_problem, symbols, unlabelled_elements_warning
from mfcalc.model.ensemble import Ensemble
from mfcalc.model.hipnn import MultiFidelityHipnn
from mfcalc.models import default_model_path
from mfcalc.neighbors import neighbor_pairs

ModelLike = Union[str, "os.PathLike[str]", torch.nn.Module, None]


class Potential:
    """A model with one fidelity head chosen, evaluated structure by structure.

    Args:
        model: path of a ``model.pt`` from ``mfcalc-train``, an already loaded model
            (TorchScript or eager), or ``None`` for the default model shipped with mfcalc.
        fidelity: head to use, e.g. ``"cc"``; ``None`` takes the model's default (the last
            fidelity it was trained with).  Change it later with ``pot.fidelity = "dft"``.
        device: ``"auto"`` (CUDA when present), ``"cpu"``, ``"cuda"``.
        dtype: ``None`` keeps the model's dtype; ``"float64"`` is worth it for NVE MD and
            tight optimisations.
        skin: Angstrom added to the cutoff for the reusable pair list (0 rebuilds every call).
        neighbor_backend: ``"auto"``, ``"torch"`` or ``"cluster"`` (torch-cluster).
        spread_warning: energy spread (eV) above which a structure counts as outside the
            training domain; ``None`` takes the model file's threshold, if any.
        freeze: TorchScript-freeze the model (weights become constants; faster per call for
            small molecules).  ``model`` is then inference-only.
        compile: run the network through ``torch.compile`` instead of TorchScript
            (:func:`mfcalc.export.compile_for_inference`): for one model and a small molecule
            1.3-2.3x faster per call, after a one-off compilation of about a minute at the
            first call; no consistent gain for a 4-member ensemble.
            Worth it for long MD; needs a C++ compiler (CPU) or Triton (CUDA).

    Raises:
        FileNotFoundError: no such model file (or no default model shipped).
        ValueError: not an mfcalc model file, unknown fidelity (lists the known ones), bad device.
    """

    def __init__(
        self,
        model: ModelLike = None,
        fidelity: Optional[str] = None,
        device: Union[str, torch.device] = "auto",
        dtype: Optional[str] = None,
        skin: float = 0.5,
        neighbor_backend: str = "auto",
        spread_warning: Optional[float] = None,
        freeze: bool = True,
        compile: bool = False,
    ):
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
        self.model: Any  # TorchScript or eager: has ``compute``
        if compile:
            self.model = export.compile_for_inference(
                module, meta, os.fspath(model) if isinstance(model, (str, os.PathLike)) else "the model"
            )
        else:
            self.model = export.freeze(module) if freeze else module
        self._compiling = compile  # the first call compiles: say so, it takes a while
        # models written by this mfcalc take the species check and pair layout once per pair
        # list (``compute(prepared=...)``); older files redo them every call
        self._prepares = _accepts_prepared(self.model)
        self.skin = float(skin)
        if self.skin < 0:
            raise ValueError(f"skin must be >= 0 Angstrom, got {skin}")
        self.neighbor_backend = neighbor_backend
        threshold = export.spread_check(meta)[0]
        self.spread_warning = spread_warning if spread_warning is not None else threshold
        # the head whose spread is compared with the threshold (None: the head in use)
        self._spread_index = export.spread_head_index(meta)
        default = meta.get(keys.META_DEFAULT_FIDELITY) or (self.fidelities[-1] if len(self.fidelities) == 1 else None)
        if fidelity is None and default is None:
            raise ValueError(f"this model has several fidelities; choose one: {', '.join(self.fidelities)}")
        self.fidelity_index = head_index(list(self.fidelities), str(fidelity if fidelity is not None else default))
        self._static_key: Optional[tuple] = None
        self._pairs: Optional[tuple] = None
        self._prepared: Optional[tuple] = None  # model.inputs() for the current pair list

    def fresh(self) -> Potential:
        """A copy that shares the model but keeps its own pair list and cached tensors (one
        per simulation that runs at the same time)."""
        other = copy.copy(self)
        other._static_key, other._pairs = None, None
        return other

    @property
    def fidelity(self) -> str:
        return self.fidelities[self.fidelity_index]

    @fidelity.setter
    def fidelity(self, name: str) -> None:
        self.fidelity_index = head_index(list(self.fidelities), name)
        if self._static_key is not None:  # the current structure's elements, against the new head
            self._warn_unlabelled(self._numbers.cpu().numpy())

    def _warn_state(self, numbers: np.ndarray, charge: int, multiplicity: Optional[int]) -> None:
        problem = electronic_state_problem(numbers, charge, multiplicity, self.metadata.get(keys.META_DOMAIN))
        if problem:
            warnings.warn(f"this structure has {problem}: outside the model's domain", stacklevel=4)

    def _warn_unlabelled(self, numbers: np.ndarray) -> None:
        unlabelled = unlabelled_elements_warning(numbers, self.metadata.get(keys.META_DOMAIN) or {}, self.fidelity)
        if unlabelled:
            warnings.warn(unlabelled, stacklevel=4)

    # ---- tensors that change only with the numbers, cell or periodicity ---------------------
    def _static(
        self, numbers: np.ndarray, cell: Optional[np.ndarray], pbc: np.ndarray, state: Tuple[int, Optional[int]]
    ):
        key = (numbers.tobytes(), None if cell is None else cell.tobytes(), pbc.tobytes(), state)
        if key != self._static_key:
            check_elements(numbers, self.species)
            if self.device.type == "cpu" and len(numbers) >= LARGE_SYSTEM_ATOMS:
                keep_freed_memory()  # large tables would be page-faulted in again on every call
            self._warn_state(numbers, *state)
            self._warn_unlabelled(numbers)
            if pbc.any() and (cell is None or abs(np.linalg.det(cell)) < 1e-9):
                raise ValueError("a periodic structure needs a cell with non-zero volume")
            self._numbers = torch.as_tensor(numbers, dtype=torch.long, device=self.device)
            self._mol = torch.zeros(len(numbers), dtype=torch.long, device=self.device)
            c = np.zeros((3, 3)) if cell is None else cell
            self._cell = torch.as_tensor(c, dtype=self.dtype, device=self.device)[None]
            self._pbc = torch.as_tensor(pbc, dtype=torch.bool, device=self.device)[None]
            self._pairs = None
            self._static_key = key
        return self._numbers, self._mol, self._cell, self._pbc

    def _pair_list(self, positions: torch.Tensor, cell: torch.Tensor, pbc: torch.Tensor):
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
        prepared = self.model.inputs(self._numbers, positions[None], pf, ps) if self._prepares else None
        self._pairs = (pf, ps, sh.to(self.dtype), positions.detach().clone())
        self._prepared = prepared
        return self._pairs[:3]

    # ---- evaluation ---------------------------------------------------------------------------
    def evaluate(
        self,
        numbers: np.ndarray,
        positions: np.ndarray,
        cell: Optional[np.ndarray] = None,
        pbc: Optional[np.ndarray] = None,
        stress: bool = False,
        charge: int = 0,
        multiplicity: Optional[int] = None,
    ) -> Dict[str, Any]:
        """Energy (eV), forces (eV/A), their member spreads and, with ``stress``, the (3, 3)
        stress (eV/A^3) of one structure; positions and cell in Angstrom.  ``charge`` and
        ``multiplicity`` (``None``: the lowest the electron count allows) are not inputs of the
        network: a state the model was not trained on (a cation, a radical) gets a warning.

        Raises:
            ValueError: an element the model lacks (names the known ones), non-finite
                positions, a periodic structure without a cell volume.
        """
        numbers = np.asarray(numbers)
        if len(numbers) == 0:
            raise ValueError("the structure has no atoms")
        pbc = np.zeros(3, dtype=bool) if pbc is None else np.array(np.broadcast_to(np.asarray(pbc, dtype=bool), (3,)))
        cell = None if cell is None else np.asarray(cell, dtype=np.float64)
        static = self._static(numbers, cell, pbc, (int(charge), None if multiplicity is None else int(multiplicity)))
        numbers_t, mol, cell_t, pbc_t = static
        positions = np.asarray(positions)
        if positions.shape != (len(numbers), 3):
            raise ValueError(f"positions must have shape ({len(numbers)}, 3), got {positions.shape}")
        if not np.isfinite(positions).all():
            raise ValueError("positions contain NaN or infinite values")
        periodic = bool(pbc.any())
        if stress and not pbc.all():
            raise ValueError("stress needs a cell periodic in all three directions")
        x = torch.as_tensor(positions, dtype=self.dtype, device=self.device)
        pf, ps, shifts = self._pair_list(x, cell_t, pbc_t)
        if self._compiling:
            print("mfcalc: compiling the model (once per process, about a minute)...", file=sys.stderr, flush=True)
            self._compiling = False
        out = self.model.compute(
            numbers_t,
            x,
            mol,
            1,
            self.fidelity_index,
            cell_t if periodic else None,
            pbc_t if periodic else None,
            pf,
            ps,
            shifts,
            True,
            stress,
            **({"prepared": self._prepared} if self._prepares else {}),
        )
        results: Dict[str, Any] = {
            "energy": float(out[keys.ENERGY][0].detach()),
            "forces": out[keys.FORCES].detach().cpu().numpy().astype(np.float64),
            "energy_std": float(out[keys.ENERGY_STD][0].detach()),
            "domain_std": self._domain_spread(out),
            "forces_std": out[keys.FORCES_STD].detach().cpu().numpy().astype(np.float64),
        }
        if not (np.isfinite(results["energy"]) and np.isfinite(results["forces"]).all()):
            raise ValueError(
                f"the model gave a non-finite energy or forces: {_closest_pair(numbers, x, pf, ps, shifts @ cell_t[0])}"
            )
        if stress:
            results["stress"] = out[keys.STRESS][0].detach().cpu().numpy().astype(np.float64)
        return results

    def _domain_spread(self, out: Dict[str, torch.Tensor]) -> float:
        """The spread the domain check uses: that of the model file's spread head
        (:func:`mfcalc.export.spread_check`), or of the head in use for files whose code
        reports no per-head spreads."""
        if self._spread_index is not None and keys.HEAD_ENERGY_STD in out:
            return float(out[keys.HEAD_ENERGY_STD][0, self._spread_index].detach())
        return float(out[keys.ENERGY_STD][0].detach())

    def outside_domain(self, results: Dict[str, Any]) -> Optional[str]:
        """A warning text when the ensemble spread (``results["domain_std"]``, as
        :meth:`evaluate` returns it) says the structure is outside the training domain."""
        spread = float(results["domain_std"])
        if self.spread_warning is not None and spread > self.spread_warning:
            head = self.fidelities[self._spread_index] if self._spread_index is not None else self.fidelity
            return (
                f"ensemble energy spread {spread:.3f} eV (head '{head}') exceeds {self.spread_warning} eV: "
                "this structure is outside the model's training domain"
            )
        return None


def _closest_pair(
    numbers: np.ndarray, x: torch.Tensor, first: torch.Tensor, second: torch.Tensor, offsets: torch.Tensor
) -> str:
    """Where a non-finite result comes from, as a user can act on it: the closest two atoms
    (atoms on top of each other have no bond direction, and the angular terms divide by it)."""
    if len(first) == 0:
        return "the structure has no pair of atoms within the cutoff"
    d = (x[second] - x[first] + offsets).norm(dim=1)  # offsets: (P, 3) the lattice translations, A
    k = int(torch.argmin(d))
    i, j = int(first[k]), int(second[k])
    a, b = symbols([int(numbers[i]), int(numbers[j])])
    return f"atoms {i} ({a}) and {j} ({b}) are {float(d[k]):.3f} A apart"


def _accepts_prepared(model: Any) -> bool:
    """Whether ``model.compute`` takes ``prepared`` and the model has ``inputs`` (TorchScript
    files carry the code they were saved with, so older ones do not)."""
    if not hasattr(model, "inputs"):
        return False
    compute = model.compute
    schema = getattr(compute, "schema", None)
    if schema is not None:  # a TorchScript method
        return any(a.name == "prepared" for a in schema.arguments)
    import inspect

    return "prepared" in inspect.signature(compute).parameters
