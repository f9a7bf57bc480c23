"""Names shared across modules: model-file metadata keys and output keys, defined once.

Model outputs (``forward`` of an exported model), for B structures, A atoms, F fidelities,
L hierarchy levels:

================  ==========  =====================================================
key               shape       meaning
================  ==========  =====================================================
energy            (B, F)      eV, ensemble mean
energy_std        (B, F)      eV, ensemble member spread (0 for a single model)
energy_levels     (B, L, F)   eV, per hierarchy level (level 0 = reference energies)
atom_energy       (A, F)      eV
hierarchicality   (B, F)      dimensionless regulariser, see the model docstring
================  ==========  =====================================================
"""

from typing import Final

# model outputs
ENERGY: Final = "energy"
ENERGY_STD: Final = "energy_std"
ENERGY_LEVELS: Final = "energy_levels"
ATOM_ENERGY: Final = "atom_energy"
HIERARCHICALITY: Final = "hierarchicality"

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
META_HPARAMS: Final = "hparams"  # model hyper-parameters
META_VERSION: Final = "mfcalc_version"
META_TRAINING: Final = "training"  # summary: data, fidelity bindings, epochs, time
META_METRICS: Final = "metrics"  # valid/test metrics per fidelity
META_CREATED: Final = "created"  # ISO time
META_RESCRIPTED: Final = "rescripted"  # mfcalc version and time of the last export.rescript
META_DEFAULT_FIDELITY: Final = "default_fidelity"  # str, what MFCalculator uses when none is named
META_SPREAD_WARNING: Final = "spread_warning_ev"  # float, ensemble energy spread above which users are warned

MODEL_FORMAT: Final = "mfcalc-model"
MODEL_FORMAT_VERSION: Final = 1
