"""Deterministic synthetic COCO-format person-keypoint data (the project's embedded default data).

``SyntheticCocoGenerator`` makes one image with its annotations; ``write_synthetic_coco``
writes a whole dataset in the COCO 2017 layout. Modules: ``figure`` (body, poses, projection),
``render`` (backgrounds, textures, painting figures and the label map), ``annotate`` (polygons,
RLE, boxes), ``generator`` (a scene and its annotations), ``writer`` (files and summary),
``video`` (a video of people walking across a scene, with ground-truth track ids).
"""

from posenet.data.synthetic.generator import SyntheticCocoGenerator, SyntheticImage, image_rng
from posenet.data.synthetic.video import SyntheticVideo, read_video_annotations, write_synthetic_video
from posenet.data.synthetic.writer import format_summary, write_synthetic_coco

__all__ = ["SyntheticCocoGenerator", "SyntheticImage", "SyntheticVideo", "format_summary", "image_rng",
           "read_video_annotations", "write_synthetic_coco", "write_synthetic_video"]
