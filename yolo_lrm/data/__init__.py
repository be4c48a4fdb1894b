"""Data: data files (`.data`, data.yaml), image lists, datasets with a scan, Darknet augmentation, multi-scale batches,
converters, the demo set.

Public API: `parse_data`, `DataCfg`, `ImageList`, `ListDataset`, `collate`, `MultiScaleBatchSampler`, `Sample`,
`LetterboxImages`, `collate_images`, `scan_dataset`, `ScanReport`, `prepare_data`, `label_path`, `read_image`,
`resolve_list`, `hyp_from_cfg`; converters: `python -m yolo_lrm.data.convert voc|kitti|yolo|coco ...`; demo data:
`python -m yolo_lrm.data.synthetic`.
"""
from .hyp import AugmentHyp, hyp_from_cfg
from .coco import convert_coco
from .datafile import DataCfg, parse_data
from .dataset import LetterboxImages, ListDataset, collate, collate_images, letterbox_targets
from .imagelist import DatasetError, ImageList, image_list, list_file, resolve_list
from .kitti import KITTI_CLASSES, convert_kitti
from .labels import ImageError, image_size, label_path, read_image
from .layout import ConvertError
from .prepare import prepare_data
from .sampler import MultiScaleBatchSampler, Sample, multiscale_size
from .scan import Issue, ScanReport, scan_dataset
from .voc import VOC_CLASSES, convert_voc
from .yolo import convert_yolo

__all__ = [
    'AugmentHyp', 'hyp_from_cfg', 'convert_coco', 'DataCfg', 'parse_data', 'LetterboxImages', 'ListDataset',
    'collate', 'collate_images', 'letterbox_targets', 'DatasetError', 'ImageList', 'image_list', 'list_file',
    'resolve_list', 'KITTI_CLASSES', 'convert_kitti', 'ImageError', 'image_size', 'label_path', 'read_image',
    'ConvertError', 'prepare_data', 'MultiScaleBatchSampler', 'Sample', 'multiscale_size', 'Issue', 'ScanReport',
    'scan_dataset', 'VOC_CLASSES', 'convert_voc', 'convert_yolo',
]
