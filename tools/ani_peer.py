"""ANI-1ccx (``../shared/peers``) through TorchANI, for the benchmarks only: the peer model users
would otherwise pick.  TorchANI looks for NeuroChem parameter files under
``$TORCHANI_DATA_DIR/Neurochem``; a temporary folder of links points it at the shared copy."""

from __future__ import annotations

import os
import tempfile
from typing import Any, Optional

PEERS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..", "shared", "peers")


def load_ani1ccx(peers: str = PEERS) -> Optional[Any]:
    """The 8-member ANI-1ccx model (energies in Hartree), or None without TorchANI or the files."""
    info = os.path.join(peers, "ani-1ccx_8x.info")
    if not os.path.exists(info):
        return None
    root = tempfile.mkdtemp(prefix="torchani-")
    os.makedirs(os.path.join(root, "Neurochem"))
    for name in ("ani-1ccx_8x", "ani-1ccx_8x.info"):
        os.symlink(os.path.abspath(os.path.join(peers, name)), os.path.join(root, "Neurochem", name))
    os.environ["TORCHANI_DATA_DIR"] = root
    try:
        from torchani import neurochem
    except ImportError:
        return None
    return neurochem.load_model_from_info_file(os.path.join(root, "Neurochem", "ani-1ccx_8x.info"))
