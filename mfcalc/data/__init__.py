"""Data layer: files -> columnar multi-fidelity records -> batches."""

from mfcalc.data.ase_io import read_ase
from mfcalc.data.dataset import (
    Batch,
    collate,
    fit_reference_energies,
    iterate_batches,
    load_data,
    read_file,
    species_counts,
    split_indices,
)
from mfcalc.data.fidelity import FidelitySpec, parse_fidelity
from mfcalc.data.hdf5 import read_hdf5
from mfcalc.data.records import MFData, concatenate

__all__ = [
    "FidelitySpec",
    "parse_fidelity",
    "MFData",
    "concatenate",
    "read_hdf5",
    "read_ase",
    "Batch",
    "collate",
    "fit_reference_energies",
    "iterate_batches",
    "load_data",
    "read_file",
    "species_counts",
    "split_indices",
]
