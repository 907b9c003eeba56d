"""Stand-ins for the network in tests of the geometry around it (flip test, scales, mapping
back to image pixels): outputs that follow the image's content exactly and cost nothing."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from posenet.data.keypoints import COCO_PERSON

K = COCO_PERSON.num_keypoints

BACKGROUND = (40, 40, 40)
# Colour codes of a few keypoint types (RGB); the other channels answer to a colour no image holds.
CODES = {0: (250, 250, 40), 1: (250, 40, 40), 2: (40, 250, 40), 5: (40, 40, 250), 6: (250, 40, 250),
         9: (40, 250, 250)}


class ColourCodedNet(torch.nn.Module):
    """A translation-equivariant stand-in for the network: heatmap k is how close each pixel's
    colour is to keypoint k's colour code, blurred (sigma 2 px) and averaged over 4x4 blocks,
    so cell j is centred on input pixel 4j + 1.5 as the real network's are. Not mirror
    symmetric in its channels, which is what makes the flip test's bookkeeping visible."""

    output_stride = 4
    has_detection = True
    has_prn = False

    def __init__(self, whole_image_box: bool = False):
        super().__init__()
        self.whole_image_box = whole_image_box
        colours = torch.full((K, 3), 1000.0)
        for k, c in CODES.items():
            colours[k] = torch.tensor(c, dtype=torch.float32)
        self.register_buffer("colours", colours)
        x = torch.arange(-6, 7, dtype=torch.float32)
        g = torch.exp(-x ** 2 / (2 * 2.0 ** 2))
        self.register_buffer("kernel", g / g.sum())

    def forward(self, images):
        x = images.float()
        d = ((x[:, None] - self.colours[None, :, :, None, None]) ** 2).sum(2)  # (N, K, H, W)
        r = torch.exp(-d / (2 * 40.0 ** 2))
        n, k, H, W = r.shape
        r = r.reshape(n * k, 1, H, W)
        r = F.conv2d(F.pad(r, (6, 6, 0, 0)), self.kernel.view(1, 1, 1, -1))
        r = F.conv2d(F.pad(r, (0, 0, 6, 6)), self.kernel.view(1, 1, -1, 1))
        r = F.pad(r, (0, (-W) % 4, 0, (-H) % 4))
        heat = F.avg_pool2d(r, 4).reshape(n, k, -(-H // 4), -(-W // 4))
        return {"heatmaps": heat * 4.0}

    def detect(self, outputs, image_sizes, **options):
        """No boxes, or (``whole_image_box``) one box over the whole input, score 0.9."""
        if not self.whole_image_box:
            return [{"boxes": torch.zeros(0, 4), "scores": torch.zeros(0)} for _ in image_sizes]
        return [{"boxes": torch.tensor([[0.0, 0.0, float(w), float(h)]]), "scores": torch.tensor([0.9])}
                for h, w in image_sizes]
