"""From scans to registrations: target surfaces of a scan (:mod:`.targets`), one scan registered into a
result folder (:mod:`.register_scan`), many scans in local processes or on a Dask cluster (:mod:`.runner`)."""

from .register_scan import layer_for, register_scan
from .targets import SurfaceTargets, scan_targets

__all__ = ["SurfaceTargets", "layer_for", "register_scan", "scan_targets"]
