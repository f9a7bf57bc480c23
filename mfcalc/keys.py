"""Names shared across modules, defined once: model outputs and model-file metadata.

Model outputs, for B structures, A atoms, F fidelities, L hierarchy levels.
``forward`` of a model (all fidelities at once):

================  ==========  =====================================================
key               shape       meaning
================  ==========  =====================================================
energy            (B, F)      eV, ensemble mean
energy_std        (B, F)      eV, ensemble member spread (0 for a single model)
energy_levels     (B, L, F)   eV, per hierarchy level (level 0 = reference energies)
atom_energy       (A, F)      eV
hierarchicality   (B, F)      dimensionless regulariser, see the model docstring
================  ==========  =====================================================

``compute`` of an exported model (one fidelity; :class:`mfcalc.model.ensemble.Ensemble`):

================  ==========  =====================================================
energy            (B,)        eV, ensemble mean
energy_std        (B,)        eV, member spread
forces            (A, 3)      eV/Angstrom, -dE/dR of the mean energy
forces_std        (A, 3)      eV/Angstrom, member spread (when asked)
stress            (B, 3, 3)   eV/Angstrom^3, (1/V) dE/d(strain) (when asked)
================  ==========  =====================================================
"""

from typing import Final

# model outputs
ENERGY: Final = "energy"
ENERGY_STD: Final = "energy_std"
ENERGY_LEVELS: Final = "energy_levels"
ATOM_ENERGY: Final = "atom_energy"
HIERARCHICALITY: Final = "hierarchicality"
FORCES: Final = "forces"
FORCES_STD: Final = "forces_std"
HEAD_ENERGY_STD: Final = "head_energy_std"  # (B, F): member spread of every head's energy (compute)
STRESS: Final = "stress"

# model-file metadata (one JSON document in the TorchScript file's extra files)
METADATA_FILE: Final = "mfcalc_metadata.json"
META_FORMAT: Final = "format"  # "mfcalc-model"
META_FORMAT_VERSION: Final = "format_version"  # int
META_FIDELITIES: Final = "fidelities"  # list[str], head order
META_SPECIES: Final = "species"  # list[int], atomic numbers
META_CUTOFF: Final = "cutoff"  # float, Angstrom
META_ENERGY_UNIT: Final = "energy_unit"  # "eV"
META_LENGTH_UNIT: Final = "length_unit"  # "Angstrom"
META_REFERENCE_ENERGIES: Final = "reference_energies"  # {fidelity: {Z: eV}}
META_ENSEMBLE_SIZE: Final = "ensemble_size"  # int
META_DTYPE: Final = "dtype"  # "float32" | "float64"
META_HPARAMS: Final = "hparams"  # model hyper-parameters (ModelSettings + species + fidelities)
META_VERSION: Final = "mfcalc_version"
META_TRAINING: Final = "training"  # resolved training settings, fidelity bindings, data, epochs, time
META_METRICS: Final = "metrics"  # valid/test metrics per fidelity
META_CREATED: Final = "created"  # ISO time
META_RESCRIPTED: Final = "rescripted"  # mfcalc version and time of the last export.rescript
META_DEFAULT_FIDELITY: Final = "default_fidelity"  # str, what MFCalculator uses when none is named
META_SPREAD_WARNING: Final = "spread_warning_ev"  # float, ensemble energy spread above which users are warned
META_SPREAD_FIDELITY: Final = "spread_warning_fidelity"  # str, the head whose spread is compared with it
# (absent: the default fidelity); see export.spread_check
META_DOMAIN: Final = "domain"  # what the training data covered: {"elements": [Z], "heavy_atoms": [min, max],
# "elements_by_fidelity": {name: [Z with an energy label of that level]}, ...}
META_TRAINING_SOURCES: Final = "training_sources"  # {"commit": git commit, "files": [repository paths]}:
# the labelled files a build in this repository trained on, as committed (tools/build_default_model.sh);
# a second stage (tools/tune_cc_head.sh) records a list of such entries, one per commit; the paths
# under "training" are the build's own copies

MODEL_FORMAT: Final = "mfcalc-model"
# 1: forward, energy_and_forces, energy_forces_spread; 2: adds compute (one call for
# energy, forces, spreads and stress); 3: the members' weights stacked and evaluated in one
# pass; 4: the interaction sums run over padded neighbour tables (same weights as 3, 3-6x
# faster).  export.load upgrades older files in memory (same weights, same numbers); a
# TorchScript file carries the code it was saved with, so only the upgrade brings new kernels.
MODEL_FORMAT_VERSION: Final = 4
