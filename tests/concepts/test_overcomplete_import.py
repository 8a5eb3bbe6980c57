"""overcomplete's dictionary code loads despite its broken package __init__."""
from __future__ import annotations

import subprocess
import sys


def test_sae_and_optimization_import_and_fit():
    code = (
        "import torch\n"
        "from raypipe.concepts.overcomplete_import import import_overcomplete\n"
        "sae = import_overcomplete('sae'); opt = import_overcomplete('optimization')\n"
        "m = sae.TopKSAE(8, nb_concepts=16, top_k=2)\n"
        "x = torch.randn(32, 8)\n"
        "_, z, x_hat = m(x)\n"
        "assert z.shape == (32, 16) and x_hat.shape == (32, 8)\n"
        "assert ((z != 0).sum(1) <= 2).all()\n"
        "nmf = opt.NMF(nb_concepts=3, max_iter=20); nmf.fit(x.abs())\n"
        "assert nmf.get_dictionary().shape == (3, 8)\n"
        "import sys; assert 'torchvision' not in sys.modules and 'timm' not in sys.modules\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
