"""mfcalc-train: config + flags -> :func:`mfcalc.train.train` -> model.pt and friends."""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from typing import List, Optional

from mfcalc.cli.common import add_settings_arguments, apply_settings, run_cli
from mfcalc.config import FidelityConfig, RunConfig, TrainSettings
from mfcalc.data.fidelity import parse_fidelity
from mfcalc.model.settings import ModelSettings

PROG = "mfcalc-train"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description="Train a multi-fidelity HIP-NN-TS model and export TorchScript.")
    p.add_argument("--data", nargs="+", metavar="FILE", help="data files (HDF5 or any ASE format)")
    p.add_argument(
        "--fidelity",
        action="append",
        metavar="NAME=ENERGY_KEY[,FORCES_KEY]",
        help="bind a fidelity to keys of the --data files (repeat, in head order)",
    )
    p.add_argument("--out", metavar="DIR", help="output directory")
    p.add_argument("--config", metavar="FILE.toml", help="TOML config; flags override it")
    p.add_argument("--resume", action="store_true", help="continue from DIR/checkpoint.pt")
    add_settings_arguments(p.add_argument_group("training (TrainSettings)"), TrainSettings)
    add_settings_arguments(p.add_argument_group("model (ModelSettings)"), ModelSettings)
    p.add_argument(
        "--energy-unit",
        help="unit of the --fidelity energies: hartree | ev | kcal/mol "
        "(default: the format's, Hartree for HDF5, eV for ASE files)",
    )
    p.add_argument(
        "--loss-weight",
        action="append",
        metavar="NAME:energy=W,forces=W,hier=W,relative=W",
        help="per-fidelity loss weights (default 1; relative: energies relative within each molecule, default 0)",
    )
    return p


def parse_loss_weight(text: str):
    name, sep, rest = text.partition(":")
    if not sep or not rest:
        raise ValueError(f"--loss-weight {text!r} must look like NAME:energy=W,forces=W,hier=W,relative=W")
    out = {}
    for item in rest.split(","):
        key, eq, val = item.partition("=")
        if not eq or key.strip() not in ("energy", "forces", "hier", "relative"):
            raise ValueError(f"--loss-weight {text!r}: terms are energy=W, forces=W, hier=W, relative=W")
        try:
            out["weight_" + key.strip()] = float(val)
        except ValueError:
            raise ValueError(f"--loss-weight {text!r}: {val!r} is not a number") from None
    return name.strip(), out


def config_from_args(args: argparse.Namespace) -> RunConfig:
    cfg = RunConfig.from_toml(args.config) if args.config else RunConfig()
    if args.data:
        cfg.data = [os.path.abspath(p) for p in args.data]
    else:
        cfg.data = [os.path.abspath(p) for p in cfg.data]
    for f in cfg.fidelities:
        f.files = [os.path.abspath(p) for p in f.files]
    if args.energy_unit:
        cfg.energy_unit = args.energy_unit
    if args.fidelity:
        cfg.fidelities = []
        for text in args.fidelity:
            spec = parse_fidelity(text)
            cfg.fidelities.append(
                FidelityConfig(spec.name, spec.energy_key, spec.forces_key, energy_unit=args.energy_unit)
            )
    if args.out:
        cfg.out = args.out
    elif not args.config:
        raise ValueError("--out DIR is required")
    cfg.out = os.path.abspath(cfg.out)
    for text in args.loss_weight or []:
        name, w = parse_loss_weight(text)
        match = [f for f in cfg.fidelities if f.name == name]
        if not match:
            raise ValueError(f"--loss-weight names fidelity {name!r}; bound: {[f.name for f in cfg.fidelities]}")
        for k, v in w.items():
            setattr(match[0], k, v)
    apply_settings(args, cfg.train)
    apply_settings(args, cfg.model)
    cfg.explicit_model |= {f.name for f in dataclasses.fields(ModelSettings) if getattr(args, f.name, None) is not None}
    cfg.explicit_train |= {f.name for f in dataclasses.fields(TrainSettings) if getattr(args, f.name, None) is not None}
    if cfg.train.init_from and cfg.train.init_from != "default":
        cfg.train.init_from = os.path.abspath(cfg.train.init_from)
    cfg.validate()
    if cfg.train.replay:
        cfg.train.replay = [os.path.abspath(f) for f in cfg.train.replay]
    return cfg


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)

    def body() -> int:
        from mfcalc.metrics import format_table
        from mfcalc.train import train

        cfg = config_from_args(args)
        metrics = train(cfg, resume=args.resume)
        if int(os.environ.get("RANK", "0")) == 0:
            print(format_table(metrics["test"], title="test split"))
        return 0

    return run_cli(PROG, body)


if __name__ == "__main__":
    sys.exit(main())
