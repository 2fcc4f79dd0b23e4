"""Development scan: ARI of the default unsupervised pipeline if training stopped at E epochs.

    python benchmarks/domains_epochs.py                 # 151673, 151674, STARmap; 5 seeds

The learning rate is constant and Adam has no schedule, so the model after E epochs of a
300-epoch run *is* the E-epoch model: one training per member gives every E. The snapshot is
taken by a copy of ``models.domains._train`` with a hook after each epoch (eval-mode encode, no
random numbers drawn, so the trajectory is unchanged). The rest is ``spatial_domains``' own
pipeline: standardised members -> PCA to 32 -> one round of neighbour averaging -> tied GMM,
30 restarts. Used to decide whether fewer epochs keep the accuracy (issue 11 point 3); the
figures are in docs/DESIGN-NOTES.md ("Spatial-domain speed").
"""

from __future__ import annotations

import inspect
import json
import sys
import textwrap
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

SNAPSHOTS = (100, 150, 200, 250, 300)
_HOOK = """        history.append(ep_loss)
        if (epoch + 1) in SNAPS:
            model.eval()
            with torch.no_grad():
                p0 = parts[0]
                z0 = model.encode(p0.x, p0.adj, p0.ax1)[:, 0]
                SNAPOUT.setdefault(epoch + 1, []).append(z0.numpy().copy())
            model.train()
"""


def main(argv=None) -> None:
    import napari_scai.models.domains as md
    from _data import labels_of, load
    from domains import ari_on_labelled
    from napari_scai.graph import normalize_adjacency
    from napari_scai.models._runtime import Runtime
    from napari_scai.models.cluster import GaussianMixture
    from napari_scai.tl import _domains as td

    names = (argv or sys.argv[1:] or ["151673,151674,starmap"])[0].split(",")
    src = textwrap.dedent(inspect.getsource(md._train))
    assert "        history.append(ep_loss)\n" in src, "training loop changed: update the hook"
    ns = dict(vars(md), SNAPS=SNAPSHOTS)
    exec(src.replace("        history.append(ep_loss)\n", _HOOK), ns)  # noqa: S102
    out: dict[str, list[dict[int, float]]] = {}
    for name in names:
        a = load(name)
        rt = Runtime(device="cpu")
        feats, _, _ = td._features(
            [a], layer=None, batch_key=None, n_top_genes=3000, n_comps=50, seed=0, rt=rt
        )
        A = td._graph_for(a, "auto", {})
        S = normalize_adjacency(A, self_loops=True, kind="row")
        for seed in range(5):
            ns["SNAPOUT"] = snaps = {}
            t = time.perf_counter()
            for m in range(3):  # the seeds spatial_domains gives its members
                s = seed * 1000 + m
                with md.preserve_global_random_state(), md.cpu_threads(a.n_obs, "cpu"):
                    cfg = md.DomainConfig(epochs=max(SNAPSHOTS))
                    ns["_train"](feats, A, cfg, Runtime("cpu", s), [s], None, None, None)
            row = {}
            for E in SNAPSHOTS:
                Z = np.asarray(S @ td._combine(snaps[E], 32, seed), dtype=np.float32)
                gmm = GaussianMixture(7, covariance_type="tied", n_init=30, seed=seed, device="cpu")
                row[E] = round(ari_on_labelled(a.obs[labels_of(name)], gmm.fit(Z).predict(Z)), 4)
            out.setdefault(name, []).append(row)
            print(name, seed, row, f"{time.perf_counter() - t:.1f} s", flush=True)
    for name, rows in out.items():
        means = {E: round(float(np.mean([r[E] for r in rows])), 4) for E in SNAPSHOTS}
        sds = {E: round(float(np.std([r[E] for r in rows], ddof=1)), 4) for E in SNAPSHOTS}
        print(name, "mean", means, "sd", sds)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
