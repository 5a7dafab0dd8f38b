import pytest
import torch

from cnn_bridge.models import CifarResNet, PlainCifarNet, build_cnn_model
from cnn_bridge.rmnet import block_statistics, resnet_to_plain


def _randomise_batch_norms(model, generator):
    """Running statistics of random images (train-mode passes), then random affine parameters."""
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    model.train()
    with torch.no_grad():
        for module in norms:
            module.momentum = None  # cumulative average
        for _ in range(2):
            model(torch.randn(8, 3, 32, 32, generator=generator) * 2 + 0.5)
        for module in norms:
            c = module.num_features
            module.weight.copy_(torch.rand(c, generator=generator) + 0.5)
            module.bias.copy_(torch.randn(c, generator=generator) * 0.2)
    model.eval()


@pytest.mark.parametrize("depth", [20, 56])
@pytest.mark.parametrize("calibrated", [False, True])
def test_plain_network_equals_resnet_in_eval_mode(depth, calibrated):
    generator = torch.Generator().manual_seed(depth)
    torch.manual_seed(depth)
    resnet = CifarResNet(depth, num_classes=10)
    _randomise_batch_norms(resnet, generator)
    resnet.eval()
    x = torch.randn(6, 3, 32, 32, generator=generator)
    calibration = [torch.randn(8, 3, 32, 32, generator=generator)] if calibrated else None
    plain = resnet_to_plain(resnet, calibration)
    assert isinstance(plain, PlainCifarNet) and not plain.training
    with torch.no_grad():
        expected, got = resnet(x), plain(x)
    assert expected.abs().max() > 0.1 and expected.std(0).max() > 1e-3  # outputs depend on the input
    assert torch.allclose(got, expected, atol=1e-5, rtol=0)
    convs = [m for m in plain.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == depth - 1  # same depth, no shortcut modules


def test_plain_network_is_exact_in_float64():
    generator = torch.Generator().manual_seed(3)
    resnet = CifarResNet(20)
    _randomise_batch_norms(resnet, generator)
    resnet = resnet.double().eval()
    x = torch.randn(4, 3, 32, 32, generator=generator, dtype=torch.float64)
    plain = resnet_to_plain(resnet, [x])
    with torch.no_grad():
        assert torch.allclose(plain(x), resnet(x), atol=1e-11, rtol=0)


def test_plain_network_state_dict_loads_into_registered_model():
    resnet = build_cnn_model("resnet20").eval()
    plain = resnet_to_plain(resnet)
    build_cnn_model("rmnet20").load_state_dict(plain.state_dict())
    block = plain.layers[3]  # first block of stage 2: 16 -> 32 channels at stride 2
    assert block.conv1.weight.shape == (48, 16, 3, 3) and block.conv2.weight.shape == (32, 48, 3, 3)


def test_downsampling_block_carries_zero_padded_input():
    resnet = CifarResNet(20).eval()
    plain = resnet_to_plain(resnet)
    carried = plain.layers[3].conv2.weight[:, 32:]  # [32 out, 16 carried]: rows 8..23 are the identity
    expected = torch.zeros(32, 16, 3, 3)
    expected[torch.arange(16) + 8, torch.arange(16), 1, 1] = 1
    assert torch.equal(carried, expected)


def test_calibration_statistics_are_those_of_block_inputs():
    torch.manual_seed(0)
    resnet = CifarResNet(20).eval()
    x = torch.randn(4, 3, 32, 32)
    stats = block_statistics(resnet, [x])
    with torch.no_grad():
        stem = torch.relu(resnet.bn1(resnet.conv1(x)))
    mean, var = stats[0]["input"]
    assert torch.allclose(mean, stem.mean((0, 2, 3)), atol=1e-6)
    assert torch.allclose(var, stem.var((0, 2, 3), unbiased=False), atol=1e-6)
    plain = resnet_to_plain(resnet, [x])
    assert torch.allclose(plain.layers[0].bn1.running_mean[16:], mean)


def test_rejects_other_models():
    with pytest.raises(TypeError, match="CifarResNet"):
        resnet_to_plain(build_cnn_model("vgg16_bn"))


def test_every_convolution_of_the_plain_network_is_prunable_and_compacts_exactly(tmp_path):
    import copy

    from cnn_bridge.allocation import MacModel, keep_for_fractions, uniform_fraction_for
    from cnn_bridge.channel_masks import ChannelMasks, channel_engine
    from cnn_bridge.channel_scores import score_layers
    from cnn_bridge.compact import architecture, load_compact, prunable_layers, remove_channels, save_compact
    from cnn_bridge.counting import count_model
    from cnn_bridge.criteria import l1

    shape = (3, 32, 32)
    generator = torch.Generator().manual_seed(7)
    resnet = CifarResNet(20)
    _randomise_batch_norms(resnet, generator)
    plain = resnet_to_plain(resnet, [torch.randn(8, *shape, generator=generator)])
    layers = prunable_layers(plain, shape)
    convs = [name for name, m in plain.named_modules() if isinstance(m, torch.nn.Conv2d)]
    assert [layer.conv for layer in layers] == convs  # all 19, block outputs included
    fraction = uniform_fraction_for(MacModel.of(plain, layers, shape), 0.5)
    keep = keep_for_fractions(score_layers(plain, layers, l1), {layer.conv: fraction for layer in layers})
    masks = ChannelMasks(channel_engine(plain, layers, keep), plain, layers)
    masks.apply()
    counts = masks.count(shape)
    assert counts["macs"]["ratio"] <= 0.5
    small = remove_channels(copy.deepcopy(plain), keep, shape).eval()
    x = torch.randn(8, *shape, generator=generator)
    with torch.no_grad():
        assert (small(x) - plain(x)).abs().max() <= 1e-5
    assert count_model(small, shape)["macs"]["dense"] == counts["macs"]["pruned"]
    assert small.layers[2].conv2.out_channels == int(keep["layers.2.conv2"].sum()) < 16
    save_compact(tmp_path, small, architecture("rmnet20", small, layers))
    loaded = load_compact(tmp_path, shape)
    with torch.no_grad():
        assert torch.equal(loaded(x), small(x))


def _digits_resnet(tmp_path):
    from cnn_bridge.data import load_digits

    data = load_digits()
    torch.manual_seed(0)
    model = build_cnn_model("resnet20", num_classes=data.num_classes, in_channels=1)
    _randomise_batch_norms_1ch(model)
    path = tmp_path / "resnet.pt"
    torch.save(model.state_dict(), path)
    return path


def _randomise_batch_norms_1ch(model):
    model.train()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.momentum = None
        model(torch.randn(16, 1, 8, 8))
    model.eval()


def test_cli_rmnet_then_prune_every_channel(tmp_path, capsys):
    import json

    from gnnprune.cli import main

    checkpoint = _digits_resnet(tmp_path)
    out = tmp_path / "plain"
    assert main(["cnn", "rmnet", "--model", "resnet20", "--dataset", "digits", "--checkpoint", str(checkpoint),
                 "--calibration-images", "64", "--check-images", "100", "--no-progress", "--out", str(out)]) == 0
    record = json.loads((out / "metrics.json").read_text())
    assert record["plain_model"] == "rmnet20" and record["max_abs_diff"] <= 1e-5
    assert record["accuracy"]["plain"] == record["accuracy"]["resnet"]
    assert record["counts"]["plain"]["macs"] > record["counts"]["resnet"]["macs"]
    run = tmp_path / "pruned"
    assert main(["cnn", "prune", "--model", "rmnet20", "--dataset", "digits", "--checkpoint", str(out / "model.pt"),
                 "--fraction", "0.5", "--finetune-epochs", "1", "--no-augment", "--latency-repeats", "1",
                 "--no-progress", "--out", str(run)]) == 0
    pruned = json.loads((run / "metrics.json").read_text())
    assert len(pruned["layers"]) == 19 and all(layer["kept"] < layer["channels"] for layer in pruned["layers"])
    assert pruned["compact_max_abs_diff"] <= 1e-5


@pytest.mark.parametrize("argv, message", [
    (["--model", "vgg16_bn"], "unknown model 'vgg16_bn'; choose one of resnet20"),
    (["--checkpoint", "{tmp}/missing.pt"], "missing.pt"),
    (["--model", "resnet56"], "is not a state_dict of resnet56 for"),
])
def test_cli_rmnet_bad_input_exits_2(tmp_path, capsys, argv, message):
    from gnnprune.cli import main

    checkpoint = _digits_resnet(tmp_path)
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    code = main(["cnn", "rmnet", "--dataset", "digits", "--checkpoint", str(checkpoint), "--out", str(tmp_path / "o"),
                 *argv])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]
    assert not (tmp_path / "o").exists()
