"""Codecs: symmetric encode/decode between annotations and network targets."""
from posenet.codecs.heatmap import KeypointHeatmapCodec, Peaks

__all__ = ["KeypointHeatmapCodec", "Peaks"]
