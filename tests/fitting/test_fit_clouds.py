"""Point-cloud fits: a partial skin (one side, ~65 %) with 50 outliers, trimmed."""

import torch

import anatomy
from anatomy.core.surface import vertex_normals
from anatomy.fitting import PointCloud, fit
from anatomy.fitting.fit_variables import surface_ids


def test_partial_cloud_fit_improves_on_the_start():
    hand = anatomy.Nimble()
    g = torch.Generator().manual_seed(1)
    truth = {"pose": hand.sample_pose(2, generator=g) * 0.3, "shape": torch.randn(2, 11, generator=g),
             "global_orient": torch.randn(2, 3, generator=g) * 0.3, "transl": torch.randn(2, 3, generator=g) * 20}
    with torch.no_grad():
        out = hand(**truth)
        rest = hand()
    ids, faces = surface_ids(hand, "skin")
    skin = out.vertices[:, ids]
    clouds = []
    for b in range(2):
        side = vertex_normals(skin[b], faces) @ torch.tensor([0.0, 0.0, 1.0]) > -0.2
        pts = skin[b][side] + 0.3 * torch.randn(int(side.sum()), 3, generator=g)
        outliers = pts[:50] + 30.0 * torch.randn(50, 3, generator=g)
        clouds.append(torch.cat([pts, outliers]))
    res = fit(hand, PointCloud(clouds, partial=True), penetration=False, iterations=(30, 60, 60))
    with torch.no_grad():
        fitted = hand(**res.params)
    err = (fitted.vertices - out.vertices).norm(dim=-1).mean(1)
    start = (rest.vertices - out.vertices).norm(dim=-1).mean(1)
    # measured 1.6 and 5.7 mm from 41 and 24 mm: the second hand ends in a local minimum (see the README)
    assert float(err.min()) < 2.5 and float(err.max()) < 7.0 and bool((err < 0.3 * start).all())
    assert len(res.residuals[0]) == 2 and res.residuals[0][0].shape == (clouds[0].shape[0],)
    assert res.report["targets"][0]["target"] == "PointCloud(partial)"
