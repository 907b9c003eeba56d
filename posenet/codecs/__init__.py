"""Codecs: symmetric encode/decode between annotations and network targets."""
from posenet.codecs.boxes import BoxCoder
from posenet.codecs.heatmap import KeypointHeatmapCodec, Peaks
from posenet.codecs.prn_grid import PrnGridCodec

__all__ = ["BoxCoder", "KeypointHeatmapCodec", "Peaks", "PrnGridCodec"]
