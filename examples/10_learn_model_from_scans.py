"""Learn a head model from scans: phantom CTs -> registrations -> a model file -> Sculptor(path).

A small LUCY-like dataset (head CTs of subjects before and after a planned orthognathic surgery,
:func:`anatomy.scans.make_head_dataset`) is registered with the embedded default head
(:func:`anatomy.pipeline.run_registrations`, what ``anatomy register`` runs: model fit, then the
anchored free-form residual; one folder per scan). ``learn_model`` then learns the template, the
shape space and the trait space (from the pre/post pairs) and the file is loaded back as a layer.
Printed: the registration error of each scan, the learned spaces, and how well the learned trait
space spans the movements the surgical plans made (cosine of the principal angles with the
generating trait fields; 1 = the same directions).

With ``--smoke`` the CTs are coarse and the phantoms' own meshes stand in for the registrations
(the step that takes about a minute per scan).
Run: ``python examples/10_learn_model_from_scans.py [--subjects 6] [--out DIR]``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from anatomy import Sculptor
from anatomy.io import load_model, save_model
from anatomy.learning import learn_model
from anatomy.models.sculptor import default_head_path
from anatomy.pipeline.runner import find_scans, run_registrations
from anatomy.scans import make_head_dataset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="one small, fast run (for the test suite)")
    parser.add_argument("--out", default=None, help="output folder (default: a new temporary folder)")
    parser.add_argument("--subjects", type=int, default=6, help="subjects, each scanned pre and post (default 6)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="anatomy_example_"))
    out.mkdir(parents=True, exist_ok=True)
    subjects = 4 if args.smoke else args.subjects
    torch.set_num_threads(1)

    clock = time.perf_counter()
    dataset = out / "lucy"
    make_head_dataset(dataset, subjects, spacing=6.0 if args.smoke else 1.0, seed=args.seed)
    print(f"{subjects} subjects x (pre, post) head CTs written to {dataset} in {time.perf_counter() - clock:.1f} s")

    registrations = dataset  # the phantoms' true meshes (manifest.json): exact registrations
    if not args.smoke:
        registrations = out / "registrations"
        clock = time.perf_counter()
        results = run_registrations("head", find_scans(dataset), registrations, workers=1)
        for r in results:
            face = r.report.get("registered", {}).get("face", {})
            print(f"  {r.job.name}: {r.status}, {r.seconds:.0f} s"
                  + (f", face residual mean {face.get('mean_mm', float('nan')):.2f} mm" if face else ""))
        print(f"registered {len(results)} scans in {time.perf_counter() - clock:.0f} s")

    base = load_model(default_head_path())
    data, report = learn_model(registrations, base, variance=0.999)
    written = save_model(data, out / "learned_head")
    head = Sculptor(written[0])
    print(f"learned from {report['registrations']} registrations: shape {report['shape']['components']} "
          f"components, trait {report['trait']['components']} ({'named' if report['trait']['named'] else 'principal'})"
          f"; layer loaded: spaces {dict(head.space_sizes)}")

    # which traits did the plans move, and does the learned trait space hold those directions?
    manifest = json.loads((dataset / "manifest.json").read_text())["samples"]
    moved = torch.tensor([s["trait_delta"] for s in manifest if s["session"] == "pre"]).abs().sum(0) > 0
    k = int(moved.sum())
    learned = data.spaces["trait"].reshape(data.spaces["trait"].shape[0], -1).double().T
    truth = base.spaces["trait"][moved].reshape(k, -1).double().T
    cosines = torch.linalg.svdvals(torch.linalg.qr(learned)[0].T @ torch.linalg.qr(truth)[0])
    print(f"the plans moved {k} traits; principal-angle cosines of the learned trait space with them: "
          f"{', '.join(f'{float(c):.4f}' for c in cosines)}")
    (out / "learn_report.json").write_text(json.dumps(report, indent=1, default=str) + "\n")
    print(f"outputs in {out}")


if __name__ == "__main__":
    main()
