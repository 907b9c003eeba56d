"""Deployment without PyTorch: the ONNX export of both model families (``export``: the graph,
its metadata, the PRN's weights), the portable numpy decoder that turns the graph's outputs
into people (``decoder``, copied beside every export), and the adapter that runs an export as a
posenet predictor (``onnx_predictor``: ``infer.py`` / ``val_keypoint.py --runtime onnx``)."""
