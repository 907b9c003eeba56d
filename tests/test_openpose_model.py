"""The OpenPose network: the layer table's shapes, every stage supervised, and the converted
weights of the original release loaded and run exactly like a reference forward written here
from the layer table (both published key layouts), with a clear error for any other file."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from posenet.errors import PosenetError
from posenet.models.openpose import OpenPoseNet, load_release_weights, release_state_dict


def small_net(**kw):
    torch.manual_seed(0)
    return OpenPoseNet(stages=kw.pop("stages", 2), **kw)


def test_outputs_at_stride_8_and_twelve_loss_terms_for_six_stages():
    net = OpenPoseNet().eval()
    images = torch.randint(0, 255, (2, 3, 60, 84), dtype=torch.uint8)
    with torch.no_grad():
        out = net(images)
    assert out["pafs"].shape == (2, 38, 8, 11) and out["heatmaps"].shape == (2, 19, 8, 11)
    targets = {"pafs": torch.zeros(2, 38, 8, 11), "heatmaps": torch.zeros(2, 19, 8, 11),
               "ignore_mask": torch.ones(2, 1, 8, 11)}
    net.train()
    losses = net(images, targets)
    assert len([k for k in losses if k != "loss"]) == 12
    losses["loss"].backward()
    assert net.trunk.convs[0].weight.grad is not None and net.paf_branches[5][0].weight.grad is not None
    # the ignore mask removes a cell from every term
    masked = dict(targets, ignore_mask=torch.zeros(2, 1, 8, 11))
    assert float(net(images, masked)["loss"].detach()) == 0.0


def reference_forward(state, images, stages, caffe):
    """The release's network from its state-dict keys, written from the layer table."""
    x = images.float()
    if caffe:
        x = x.flip(1) / 256.0 - 0.5
    else:
        mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1) * 255
        std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1) * 255
        x = (x - mean) / std

    def conv(x, key, relu=True):
        w = state[f"{key}.weight"]
        x = F.conv2d(x, w, state[f"{key}.bias"], padding=w.shape[-1] // 2)
        return F.relu(x) if relu else x

    for i, key in enumerate((0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25)):
        x = conv(x, f"model0.{key}")
        if i in (1, 3, 7):  # after conv1_2, conv2_2, conv3_4
            x = F.max_pool2d(x, 2)
    features, inputs = x, x
    for t in range(1, stages + 1):
        keys = (0, 2, 4, 6, 8) if t == 1 else (0, 2, 4, 6, 8, 10, 12)
        branches = []
        for b in (1, 2):
            y = inputs
            for key in keys[:-1]:
                y = conv(y, f"model{t}_{b}.{key}")
            branches.append(conv(y, f"model{t}_{b}.{keys[-1]}", relu=False))
        inputs = torch.cat([branches[0], branches[1], features], 1)
    return branches


@pytest.mark.parametrize("layout", ["pose_model.pth", "pose_model_scratch.pth"])
def test_release_weights_load_and_run_as_the_reference(tmp_path, layout):
    source = small_net()
    state = release_state_dict(source)
    torch.manual_seed(1)
    state = {k: torch.randn_like(v) * 0.05 for k, v in state.items()}  # weights unlike any init
    if layout == "pose_model_scratch.pth":
        state = {f"module.{k}": v for k, v in state.items()}
    path = tmp_path / layout
    torch.save(state, path)
    net = small_net()
    preprocessing = load_release_weights(net, path)
    assert preprocessing == ("caffe" if layout == "pose_model.pth" else "imagenet")
    images = torch.randint(0, 255, (1, 3, 48, 64), dtype=torch.uint8)
    with torch.no_grad():
        out = net.eval()(images)
        plain = {k.replace("module.", ""): v for k, v in state.items()}
        pafs, heat = reference_forward(plain, images, 2, caffe=preprocessing == "caffe")
    torch.testing.assert_close(out["pafs"], pafs, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out["heatmaps"], heat, atol=1e-5, rtol=1e-5)
    # the preprocessing is part of the weights: a checkpoint of the model keeps it
    again = small_net()
    again.load_state_dict(net.state_dict())
    assert again.preprocessing == preprocessing


def test_a_file_of_another_layout_is_one_clear_error(tmp_path):
    net = small_net()
    state = release_state_dict(net)
    wrong = dict(state)
    wrong["model1_1.8.weight"] = torch.zeros(37, 512, 1, 1)
    with pytest.raises(PosenetError, match=r"model1_1\.8\.weight has shape \(37, 512, 1, 1\).*\(38, 512, 1, 1\)"):
        load_release_weights(net, wrong)
    missing = {k: v for k, v in state.items() if not k.startswith("model0.0.")}
    with pytest.raises(PosenetError, match="no key 'model0.0.weight'"):
        load_release_weights(net, missing)
    with pytest.raises(PosenetError, match="unexpected key 'fc.weight'"):
        load_release_weights(net, dict(state, **{"fc.weight": torch.zeros(1)}))
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(PosenetError, match="cannot read .*junk.pth"):
        load_release_weights(net, tmp_path / "junk.pth")
    with pytest.raises(PosenetError, match="not found"):
        load_release_weights(net, tmp_path / "nope.pth")
