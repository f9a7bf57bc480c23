"""Run configuration: TOML round trip, unknown keys, and settings declared once (flags generated)."""

import dataclasses
import json

import pytest

from mfcalc.cli.train import build_parser, config_from_args
from mfcalc.config import FidelityConfig, RunConfig, TrainSettings
from mfcalc.model import MultiFidelityHipnn
from mfcalc.model.settings import ModelSettings


def full_config() -> RunConfig:
    cfg = RunConfig(
        data=["/d/ref.h5"],
        out="/r/run",
        energy_unit="hartree",
        fidelities=[
            FidelityConfig("dft", "wb97x_dz.energy", "wb97x_dz.forces", forces_unit="hartree/bohr", weight_forces=0.5),
            FidelityConfig("cc", "ccsd(t)_dz.energy", files=["/d/cc.h5"], weight_energy=2.0),
        ],
    )
    cfg.model.n_features, cfg.model.cutoff, cfg.model.species, cfg.model.resnet = 12, 4.5, [1, 6, 8], False
    cfg.train.epochs, cfg.train.lr, cfg.train.max_minutes, cfg.train.split_by = 7, 3e-4, 2.5, "smiles"
    return cfg.validate()


def test_toml_round_trip_keeps_every_field(tmp_path):
    cfg = full_config()
    path = tmp_path / "config.toml"
    path.write_text(cfg.to_toml())
    again = RunConfig.from_toml(str(path))
    assert again.to_dict() == cfg.to_dict()
    assert again.model == cfg.model and again.train == cfg.train
    assert [dataclasses.asdict(f) for f in again.fidelities] == [dataclasses.asdict(f) for f in cfg.fidelities]


@pytest.mark.parametrize(
    "text, needle",
    [
        ("bogus = 1\n", "unknown top-level config keys ['bogus']"),
        ("[model]\nn_feature = 3\n", "unknown keys ['n_feature'] in [model]"),
        ("[train]\nepoch = 3\n", "unknown keys ['epoch'] in [train]"),
        ("[fidelity.dft]\nenergy = 'e'\nforce = 'f'\n", "unknown keys ['force'] in [fidelity.dft]"),
        ("data = [\n", "is not valid TOML"),
    ],
)
def test_unknown_or_malformed_keys_are_named(tmp_path, text, needle):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ValueError, match=needle.replace("[", r"\[").replace("]", r"\]")):
        RunConfig.from_toml(str(path))


def test_every_setting_has_a_flag_and_the_flag_reaches_the_config():
    """A setting is declared once, in its dataclass: its flag exists and lands in the config."""
    parser = build_parser()
    flags = {a.dest: a for a in parser._actions}
    for cls in (TrainSettings, ModelSettings):
        for f in dataclasses.fields(cls):
            assert f.name in flags, f"--{f.name.replace('_', '-')} missing"
            assert flags[f.name].help, f"--{f.name} has no help text"
    args = parser.parse_args(
        [
            "--data",
            "x.h5",
            "--fidelity",
            "dft=e",
            "--out",
            "o",
            "--min-epochs",
            "7",
            "--grad-clip",
            "0.25",
            "--soft-min",
            "0.5",
            "--no-resnet",
            "--species",
            "1",
            "6",
            "--dtype",
            "float64",
            "--lr-factor",
            "0.25",
        ]
    )
    cfg = config_from_args(args)
    assert cfg.train.min_epochs == 7 and cfg.train.grad_clip == 0.25 and cfg.train.dtype == "float64"
    assert cfg.train.lr_factor == 0.25
    assert cfg.model.soft_min == 0.5 and cfg.model.resnet is False and cfg.model.species == [1, 6]
    # flags not given leave the dataclass defaults
    assert cfg.train.epochs == TrainSettings().epochs and cfg.model.cutoff == ModelSettings().cutoff


def test_the_model_is_built_from_the_settings_and_records_them():
    settings = ModelSettings(n_features=6, n_sensitivities=4, n_atom_layers=1, cutoff=4.0, cusp_reg=1e-3)
    model = MultiFidelityHipnn([1, 6, 8], ["dft", "cc"], settings)
    hp = json.loads(model.hparams)
    assert hp == dict(species=[1, 6, 8], fidelities=["dft", "cc"], **settings.architecture())
    assert hp["soft_max"] == 3.0  # derived: cutoff - 1, recorded resolved
    rebuilt = MultiFidelityHipnn(**hp)
    assert rebuilt.hparams == model.hparams
    assert (
        MultiFidelityHipnn([1, 6], ["a"], n_features=5).hparams
        == MultiFidelityHipnn([1, 6], ["a"], ModelSettings(n_features=5)).hparams
    )
    with pytest.raises(TypeError, match="unknown model setting"):
        MultiFidelityHipnn([1, 6], ["a"], n_feature=5)


@pytest.mark.parametrize(
    "change, needle",
    [
        (dict(soft_max=6.0), "soft_max <= cutoff"),
        (dict(cutoff=0.5), "soft_min < soft_max"),  # the derived soft_max (cutoff - 1) is checked as resolved
        (dict(tensor_order=3), "tensor_order"),
        (dict(n_features=0), "n_features"),
        (dict(species=[1, 1]), "species"),
    ],
)
def test_model_settings_are_validated_with_derived_values(change, needle):
    with pytest.raises(ValueError, match=needle):
        dataclasses.replace(ModelSettings(), **change).validate()


@pytest.mark.parametrize(
    "change, needle",
    [
        (dict(min_epochs=-1), "min_epochs"),
        (dict(lr_factor=1.5), "lr_factor"),
        (dict(max_minutes=0), "max_minutes"),
        (dict(device="tpu"), "device"),
        (dict(max_structures=0), "max_structures"),
    ],
)
def test_train_settings_are_validated(change, needle):
    with pytest.raises(ValueError, match=needle):
        dataclasses.replace(TrainSettings(), **change).validate()
