"""anatomy.scans: CT/MRI volumes in, tissues and surfaces out, and phantoms with known answers.

* :class:`Volume`: a voxel array ``(X, Y, Z)`` with its 4x4 voxel -> world affine (mm, RAS+),
  modality and reader facts.
* :func:`read_volume`: one entry point for NIfTI, DICOM series, PNG/TIFF slice stacks and
  (with SimpleITK) NRRD/MHA; or the readers themselves :func:`read_nifti`, :func:`read_dicom`,
  :func:`read_slices`, :func:`read_sitk`.
* :func:`write_nifti`: atomic NIfTI writer for images and label maps.
* :func:`segment_scan` / :func:`segment_ct` / :func:`segment_mri` / :func:`from_labels` /
  :func:`from_phantom`: tissue labels; :func:`tissue_surfaces` / :func:`extract_surface`: surfaces.
* :func:`phantom_labels`, :func:`ct_from_labels`, :func:`mri_from_labels`: phantoms of model outputs;
  :func:`settle_soft_tissue`: elastic soft tissue of a posed hand; :func:`make_head_dataset`,
  :func:`make_hand_dataset`: LUCY-like and MRI-Hand-like datasets on disk.

nibabel, pydicom, Pillow and SimpleITK are optional (pip extra ``scans``) and imported only by
the reader that needs them.
"""

from .dicom import read_dicom
from .nifti import read_nifti, write_nifti
from .read import read_volume
from .sitk import read_sitk
from .slices import read_slices
from .volume import MODALITIES, Volume

__all__ = ["MODALITIES", "Volume", "read_dicom", "read_nifti", "read_sitk", "read_slices", "read_volume", "write_nifti"]

# segmentation (histogram thresholds, no training labels) and closed tissue surfaces
from .segment import Segmentation, Tissue, from_labels, segment_ct, segment_mri, split_mandible  # noqa: E402
from .surface import Surface, extract_surface  # noqa: E402

__all__ += ["Segmentation", "Surface", "Tissue", "extract_surface", "from_labels", "segment_ct", "segment_mri"]
__all__ += ["split_mandible"]

# the jaw split by a template head, phantom label codes, and scan -> tissues -> surfaces in one call
from .jaw_template import split_mandible_by_template  # noqa: E402
from .labelmap import PHANTOM_TO_TISSUE, from_phantom  # noqa: E402
from .tissues import segment_scan, tissue_surfaces  # noqa: E402

__all__ += ["PHANTOM_TO_TISSUE", "from_phantom", "segment_scan", "split_mandible_by_template", "tissue_surfaces"]

# phantoms: label maps with partial volume from model outputs, CT and MRI volumes from them
from .phantom_ct import ct_from_labels  # noqa: E402
from .phantom_labels import PhantomTissue, phantom_labels  # noqa: E402
from .phantom_mri import mri_from_labels  # noqa: E402

__all__ += ["PhantomTissue", "ct_from_labels", "mri_from_labels", "phantom_labels"]

# phantom datasets on disk (NIfTI + meshes + JSON ground truth + manifest.json): LUCY-like and MRI-Hand-like
from .datasets_hand import make_hand_dataset  # noqa: E402
from .datasets_head import make_head_dataset  # noqa: E402

__all__ += ["make_hand_dataset", "make_head_dataset"]

# soft tissue following the bones: quasi-static elastic muscles and skin volume of the hand
from .phantom_soft import settle_soft_tissue  # noqa: E402

__all__ += ["settle_soft_tissue"]
