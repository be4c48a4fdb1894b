"""Data: Darknet list datasets with a scan, Darknet augmentation, multi-scale batches, converters, the demo set.

Public API: `ListDataset`, `collate`, `MultiScaleBatchSampler`, `Sample`, `LetterboxImages`, `collate_images`,
`scan_dataset`, `ScanReport`, `prepare_data`, `label_path`, `read_image`, `resolve_list`, `hyp_from_cfg`;
converters: `python -m yolo_lrm.data.convert voc|kitti ...`; demo data: `python -m yolo_lrm.data.synthetic`.
"""
from .hyp import AugmentHyp, hyp_from_cfg
from .dataset import LetterboxImages, ListDataset, collate, collate_images, letterbox_targets
from .kitti import KITTI_CLASSES, convert_kitti
from .labels import ImageError, image_size, label_path, read_image
from .layout import ConvertError
from .prepare import prepare_data
from .sampler import MultiScaleBatchSampler, Sample, multiscale_size
from .scan import DatasetError, Issue, ScanReport, resolve_list, scan_dataset
from .voc import VOC_CLASSES, convert_voc

__all__ = [
    'AugmentHyp', 'hyp_from_cfg', 'LetterboxImages', 'ListDataset', 'collate', 'collate_images', 'letterbox_targets',
    'KITTI_CLASSES', 'convert_kitti', 'ImageError', 'image_size', 'label_path', 'read_image', 'ConvertError',
    'prepare_data', 'MultiScaleBatchSampler', 'Sample', 'multiscale_size', 'DatasetError', 'Issue', 'ScanReport',
    'resolve_list', 'scan_dataset', 'VOC_CLASSES', 'convert_voc',
]
