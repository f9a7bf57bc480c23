"""mfcalc-rank-conformers: declared now, implemented with the conformer issue."""

import sys


def main(argv=None) -> int:
    print("mfcalc-rank-conformers is not implemented yet (planned: generate, optimise and rank conformers).",
          file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
