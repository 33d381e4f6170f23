"""Contract tests over every registered model, the ResNet site table, hooks and transfer."""

import numpy as np
import pytest
import torch
import torchvision

from adalase_tune.config import ConfigError, ModelConfig
from adalase_tune.models import MODELS, build_model, load_backbone, save_model
from adalase_tune.ops import get_op
from adalase_tune.sites import DAContext, attach_sites

INPUT = {"mlp": (1, 8, 8), "cnn": (1, 8, 8)}


@pytest.mark.parametrize("name", MODELS.names())
def test_model_publishes_sites_and_each_site_augments(name):
    shape = INPUT.get(name, (3, 32, 32))
    model = build_model(ModelConfig(name=name, hidden=(16, 8), width=4), shape, 5).eval()
    sites = model.da_sites
    assert sites[0].name == "input"
    assert sites[0].shape == shape  # the input as it comes: an image stays (C, H, W) for every model
    assert len(sites) >= 3
    x = torch.randn(4, *shape)
    with torch.no_grad():
        plain = model(x)
        assert plain.shape == (4, 5)
        for i, _ in enumerate(sites):
            with DAContext(site=i, op=get_op("mixup"), rng=np.random.default_rng(0)) as ctx:
                out = model(x)
            assert ctx.applied, f"site {i} of {name} was never visited"
            assert not torch.allclose(out, plain)
        with DAContext(site=None) as ctx:
            assert torch.equal(model(x), plain)


def test_resnet_sites_match_the_algorithm_table():
    cifar = build_model(ModelConfig(name="resnet18", stem="cifar"), (3, 32, 32), 10).da_sites
    assert [s.name for s in cifar] == ["input", "stem", "layer1", "layer2", "layer3", "layer4"]
    assert [s.shape for s in cifar] == [
        (3, 32, 32),
        (64, 32, 32),
        (64, 32, 32),
        (128, 16, 16),
        (256, 8, 8),
        (512, 4, 4),
    ]
    imnet = build_model(ModelConfig(name="resnet50", stem="imagenet"), (3, 64, 64), 10).da_sites
    assert [s.shape for s in imnet] == [
        (3, 64, 64),
        (64, 16, 16),
        (256, 16, 16),
        (512, 8, 8),
        (1024, 4, 4),
        (2048, 2, 2),
    ]


def test_mlp_sites_are_input_and_each_hidden_layer():
    sites = build_model(ModelConfig(name="mlp", hidden=(1000,)), (1, 8, 8), 10).da_sites
    assert [(s.name, s.shape) for s in sites] == [("input", (1, 8, 8)), ("hidden1", (1000,))]
    sites = build_model(ModelConfig(name="mlp", hidden=(16, 8)), (32,), 10).da_sites  # vectors, e.g. motifs
    assert [(s.name, s.shape) for s in sites] == [("input", (32,)), ("hidden1", (16,)), ("hidden2", (8,))]


def test_hooks_give_a_vit_sites_by_module_name():
    torch.manual_seed(0)
    # torchvision's VisionTransformer, the class behind vit_b_16, at a size that builds in milliseconds
    vit = torchvision.models.VisionTransformer(
        image_size=32, patch_size=16, num_layers=4, num_heads=2, hidden_dim=32, mlp_dim=64
    ).eval()
    vit.heads = torch.nn.Identity()  # torchvision zero-initialises the head: compare the features
    blocks = [f"encoder.layers.encoder_layer_{i}" for i in range(4)]
    sites = attach_sites(vit, blocks, torch.zeros(1, 3, 32, 32))
    assert len(sites) == 5 and sites[0].shape == (3, 32, 32)
    assert all(s.shape == (5, 32) for s in sites[1:])  # 4 patches + class token
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        plain = vit(x)
        with DAContext(site=None):
            assert torch.equal(vit(x), plain)
        with DAContext(site=3, op=get_op("mixup"), rng=np.random.default_rng(0)) as ctx:
            mixed = vit(x)
    assert ctx.applied and not torch.allclose(mixed, plain)
    with pytest.raises(ConfigError, match="no such submodules"):
        attach_sites(vit, ["encoder.nope"], torch.zeros(1, 3, 32, 32))


def test_checkpoint_transfer_keeps_the_backbone_and_a_fresh_head(tmp_path):
    torch.manual_seed(0)
    source = build_model(ModelConfig(name="cnn", width=4), (1, 8, 8), 5)
    path = tmp_path / "source.pt"
    save_model(source, path, {"note": "test"})
    torch.manual_seed(1)
    target = build_model(ModelConfig(name="cnn", width=4, checkpoint=str(path)), (1, 8, 8), 3)
    for key, value in source.state_dict().items():
        if key.startswith("head."):
            assert target.state_dict()[key].shape != value.shape
        else:
            assert torch.equal(target.state_dict()[key], value), key


def test_checkpoint_of_another_model_is_refused_by_name(tmp_path):
    path = tmp_path / "mlp.pt"
    save_model(build_model(ModelConfig(name="mlp", hidden=(8,)), (1, 8, 8), 5), path, {})
    with pytest.raises(ConfigError, match=r"model.checkpoint = .*mlp.pt.* does not fit"):
        load_backbone(build_model(ModelConfig(name="cnn", width=4), (1, 8, 8), 5), path)


def test_unknown_model_and_pretrained_name():
    with pytest.raises(ConfigError, match="model.name = 'resnet19'.*did you mean"):
        build_model(ModelConfig(name="resnet19"), (3, 32, 32), 10)
    with pytest.raises(ConfigError, match="model.pretrained = 'NOPE'"):
        build_model(ModelConfig(name="resnet18", pretrained="NOPE"), (3, 32, 32), 10)
