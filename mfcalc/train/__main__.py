"""``python -m mfcalc.train`` (e.g. under ``torchrun``) is ``mfcalc-train``."""

import sys

from mfcalc.cli.train import main

sys.exit(main())
