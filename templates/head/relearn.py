"""Re-learn the embedded default head's shape and trait spaces from a LUCY-like phantom population.

The population is that of :func:`anatomy.scans.make_head_dataset` without the CT volumes: per
subject a random head of the default model (``shape ~ N(0, 1)``), a random surgical plan and the
pre- and post-operative heads (:func:`anatomy.fitting.simulate_surgery`), with the trait movements
of the plan. The phantoms' true meshes stand in for the registrations
(``benchmarks/registration_scans.py`` measures how far ``anatomy register`` is from them).
:func:`anatomy.learning.learn_model` learns the template, the shape space (skull, mandible and face
together) and the trait space (from the pre/post pairs, named by the plans' movements).

Held-out subjects (pre and post) are reconstructed by each model's linear spaces (least squares over
the shape and trait coefficients after a similarity alignment): mean vertex error per tissue, in mm.
Because these phantoms are drawn from the default model's own spaces, a model learned from them can
at best match the default; it replaces ``templates/assets/head.*`` (``--ship``) only if it is at
least as good on every tissue. The figures go to ``templates/head/relearn_report.json``.

Run: ``python templates/head/relearn.py [--subjects 30 --held 5] [--ship]`` (about a minute).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from anatomy import Sculptor
from anatomy.core.alignment import procrustes
from anatomy.fitting.surgery import simulate_surgery, trait_movements
from anatomy.io import ModelData, load_model, save_model
from anatomy.learning import Registration, learn_model
from anatomy.models.sculptor import default_head_path
from anatomy.scans.datasets import sample_seeds
from anatomy.scans.datasets_head import SURGERY_PLAN, plan_surgery

ROOT = Path(__file__).resolve().parents[2]
REPORT = ROOT / "templates" / "head" / "relearn_report.json"


def population(head: Sculptor, count: int, seed: int) -> list[Registration]:
    """``count`` subjects, each a ``pre`` and a ``post`` registration (the LUCY-like phantoms' heads)."""
    table = trait_movements(head)
    names = list(table)
    regs = []
    for s in range(count):
        gen, rng = sample_seeds(seed, s)
        params = head.sample(1, generator=gen, spaces=("shape",), jaw=False)
        moves = plan_surgery(rng, SURGERY_PLAN)
        delta = torch.zeros(1, head.space_sizes["trait"], dtype=torch.float64)
        for name, mm in moves.items():
            delta[0, names.index(name)] += mm / table[name]
        params["trait"] = (torch.from_numpy(rng.uniform(-0.25, 0.25, size=tuple(delta.shape))) - delta).to(
            head.template.dtype)
        result = simulate_surgery(params, moves, head)
        info = {"trait_delta": result.trait_delta[0].double().tolist(), "surgery_mm": moves}
        for session, out in (("pre", result.pre), ("post", result.post)):
            regs.append(Registration(f"sub-{s:03d}", session, Path("."),
                                     out.vertices[0].detach().double().numpy(), dict(info)))
    return regs


def reconstruction_error(data: ModelData, regs: list[Registration]) -> dict[str, float]:
    """Mean vertex error (mm) per tissue of each mesh's least-squares reconstruction by the model's
    shape and trait spaces (alternating with a rigid alignment of the mesh to the fit, 12 rounds)."""
    template = data.template.double()
    basis = torch.cat([data.spaces[n].double() for n in ("shape", "trait") if n in data.spaces])
    flat = basis.reshape(basis.shape[0], -1).T
    errs = []
    for r in regs:
        target = torch.from_numpy(r.vertices)
        fit = template
        for _ in range(12):
            aligned = procrustes(target[None], fit[None]).apply(target[None])[0]
            coeffs = torch.linalg.lstsq(flat, (aligned - template).reshape(-1, 1)).solution
            fit = template + (flat @ coeffs).reshape(-1, 3)
        errs.append((fit - aligned).norm(dim=-1))
    err = torch.stack(errs)
    out = {t.name: round(float(err[:, t.start:t.stop].mean()), 4) for t in data.tissues}
    out["all"] = round(float(err.mean()), 4)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, default=30)
    parser.add_argument("--held", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--ship", action="store_true", help="replace templates/assets/head.* if at least as good")
    args = parser.parse_args()
    base = load_model(default_head_path())
    head = Sculptor(base, dtype=torch.float64)
    train = population(head, args.subjects, args.seed)
    held = population(head, args.held, args.seed + 1)
    data, report = learn_model(train, base, provenance={"population": {
        "script": "templates/head/relearn.py", "subjects": args.subjects, "seed": args.seed,
        "sessions": ["pre", "post"]}})
    scores = {"default": reconstruction_error(base, held), "learned": reconstruction_error(data, held)}
    better = all(scores["learned"][t.name] <= scores["default"][t.name] for t in base.tissues)
    record: dict[str, Any] = {"subjects": args.subjects, "held_out": f"{args.held} subjects, pre and post",
                              "held_out_error_mm": scores, "learned_at_least_as_good": better,
                              "shipped": bool(args.ship and better),
                              "report": {k: v for k, v in report.items() if not isinstance(v, np.ndarray)}}
    print(json.dumps({k: v for k, v in record.items() if k != "report"}, indent=1))
    tmp = REPORT.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=1, default=str) + "\n")
    tmp.replace(REPORT)
    if args.ship and better:
        save_model(data, ROOT / "templates" / "assets" / "head")
        print("shipped: templates/assets/head.* replaced by the learned head")


if __name__ == "__main__":
    main()
