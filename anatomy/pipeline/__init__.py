"""From scans to registrations: target surfaces of a scan (:mod:`.targets`), one scan registered into a
result folder (:mod:`.register_scan`), many scans in local processes or on a Dask cluster
(:mod:`.runner`), and ``anatomy.fit`` on files, volumes or in-memory targets (:mod:`.fit_target`)."""

from .fit_target import fit, read_fit_target
from .register_scan import layer_for, register_scan
from .targets import SurfaceTargets, scan_targets

__all__ = ["SurfaceTargets", "fit", "layer_for", "read_fit_target", "register_scan", "scan_targets"]
