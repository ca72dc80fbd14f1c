"""CTS baseline: exact token budget, scatter-back round trip, CTSViT forward/backward, policy weights
and policy training on synthetic scenes."""

from __future__ import annotations

import json
import math

import pytest
import torch

from clustvit import cli
from clustvit.data.synthetic import Synthetic
from clustvit.models.cts import CTSViT, PolicyNet, convert_policy_state_dict, save_policy
from clustvit.models.cts.sharing import (
    gather_patches,
    patchify,
    plan_sharing,
    share_tokens,
    shared_budget,
    super_grid,
    unshare_tokens,
)
from clustvit.models.cts.train_policy import evaluate_policy, superpatch_labels, train_policy
from clustvit.models.vit import VisionTransformer

TINY = dict(img_size=(512, 512), embed_dim=32, depth=2, num_heads=2)


@pytest.fixture(autouse=True)
def _one_thread():
    """One intra-op thread: deterministic and immune to oversubscription when tests run in parallel."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_budget_reference_numbers() -> None:
    ref = (32, 32)  # 512x512, patch 16
    assert shared_budget(ref, 103, ref) == 103  # 1024 - 3 * 103 = 715 tokens
    assert shared_budget((64, 64), 103, ref) == 412  # 1024x1024 keeps the fraction exactly
    assert shared_budget((32, 48), 103, ref) == 155  # 384 cells * 103/256 = 154.5 -> 155
    assert shared_budget((1, 7), 103, ref) == 0  # no complete 2x2 cell
    with pytest.raises(ValueError, match="num_shared=300"):
        shared_budget(ref, 300, ref)


@pytest.mark.parametrize("size", [(512, 512), (256, 384), (500, 375), (96, 64), (16, 48)])
@pytest.mark.parametrize("batch", [1, 3])
def test_ctsvit_budget_exact(size: tuple[int, int], batch: int) -> None:
    torch.manual_seed(0)
    model = CTSViT(**TINY, num_shared=103).eval()
    with torch.no_grad():
        out = model(torch.randn(batch, 3, *size))
    h, w = math.ceil(size[0] / 16), math.ceil(size[1] / 16)
    budget = shared_budget((h, w), 103, (32, 32))
    assert out.features[0].shape == (batch, 32, h, w)
    assert (out.tokens_per_block == 1 + h * w - 3 * budget).all()
    assert out.tokens_per_block.shape == (batch, 2)
    assert out.extra["shared_mask"].shape == (batch, h // 2, w // 2)
    assert (out.extra["shared_mask"].flatten(1).sum(1) == budget).all()
    if size == (512, 512):
        assert out.tokens_per_block[0, 0] == 1 + 715


def test_plan_is_a_partition_of_the_grid() -> None:
    torch.manual_seed(0)
    grid = (7, 10)  # odd rows: the last patch row can never be shared
    scores = torch.rand(4, *super_grid(grid))
    plan = plan_sharing(scores, grid, num_shared=5)
    n_fine = 70 - 4 * 5
    assert plan.num_tokens == n_fine + 5
    # Every fine token covers one patch, every shared token exactly four.
    counts = torch.stack([torch.bincount(s, minlength=plan.num_tokens) for s in plan.source])
    assert (counts[:, :n_fine] == 1).all() and (counts[:, n_fine:] == 4).all()
    # The shared cells are the top-scoring ones.
    top = scores.flatten(1).topk(5, dim=1).indices.sort(1).values
    assert torch.equal(plan.shared_idx, top)
    # A fine token's position id is its own patch; a shared token's is its top-left patch.
    ar = torch.arange(plan.num_tokens)
    assert (plan.source.gather(1, plan.pos_ids) == ar).all()


def test_scatter_back_round_trip_exact() -> None:
    """Tokens -> full grid -> tokens is the identity, and a grid constant on every shared cell survives
    grid -> tokens -> grid bit for bit."""
    torch.manual_seed(0)
    grid = (9, 12)
    plan = plan_sharing(torch.rand(2, *super_grid(grid)), grid, num_shared=11)
    tokens = torch.randint(-100, 100, (2, plan.num_tokens, 5)).float()  # (B, L, C)
    fine = unshare_tokens(tokens, plan)  # (B, h*w, C)
    assert torch.equal(share_tokens(fine, plan), tokens)
    assert torch.equal(unshare_tokens(share_tokens(fine, plan), plan), fine)
    # Each token lands on exactly the patches it came from.
    for b in range(2):
        for t in (0, plan.num_tokens - 1):
            where = (plan.source[b] == t).nonzero()[:, 0]
            assert (fine[b, where] == tokens[b, t]).all()


def test_gathered_pixels_round_trip_through_the_grid() -> None:
    """An image constant on every 32x32 cell: every token's pixels (fine crop or 2x-downsampled cell)
    equal the cell value, and scattering token values back reproduces the image's patch grid."""
    torch.manual_seed(0)
    p, grid = 16, (6, 8)
    cells = torch.randint(0, 50, (2, 3, 3, 4)).float()  # (B, C, h/2, w/2)
    image = cells.repeat_interleave(32, 2).repeat_interleave(32, 3)  # (B, C, 96, 128)
    plan = plan_sharing(torch.rand(2, 3, 4), grid, num_shared=5)
    strip = gather_patches(image, plan, p)  # (B, C, p, L*p)
    assert strip.shape == (2, 3, p, plan.num_tokens * p)
    token_pixels = strip.reshape(2, 3, p, plan.num_tokens, p).permute(0, 3, 1, 2, 4)  # (B, L, C, p, p)
    assert (token_pixels == token_pixels[..., :1, :1]).all()  # each token is flat, bilinear included
    back = unshare_tokens(token_pixels[..., 0, 0], plan)  # (B, h*w, C)
    assert torch.equal(back, patchify(image, p)[..., 0, 0])


def test_ctsvit_forward_backward_finite() -> None:
    torch.manual_seed(0)
    model = CTSViT(img_size=(64, 64), embed_dim=32, depth=3, num_heads=2, out_indices=(0, 2),
                   drop_path_rate=0.1, num_shared=2).train()
    x = torch.randn(2, 3, 64, 96)
    out = model(x)
    assert [f.shape for f in out.features] == [(2, 32, 4, 6)] * 2
    assert (out.tokens_per_block == 1 + 24 - 3 * 3).all()  # 6 cells * 2/4 = 3 shared
    assert out.extra["policy_logits"].shape == (2, 2, 2, 3)
    assert not model.policy_net.training  # frozen policy keeps its BN statistics
    sum(f.square().mean() for f in out.features).backward()
    grads = [p.grad for n, p in model.named_parameters() if not n.startswith("policy_net.")]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert model.patch_embed.proj.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.policy_net.parameters())


def test_ctsvit_without_sharing_equals_vit() -> None:
    torch.manual_seed(0)
    cts = CTSViT(img_size=(64, 64), embed_dim=32, depth=2, num_heads=2, out_indices=(0, 1), num_shared=0)
    vit = VisionTransformer(img_size=(64, 64), embed_dim=32, depth=2, num_heads=2, out_indices=(0, 1))
    vit.load_state_dict({k: v for k, v in cts.state_dict().items() if not k.startswith("policy_net.")})
    x = torch.randn(2, 3, 80, 48)  # pos-embed resampled too
    with torch.no_grad():
        a, b = cts.eval()(x), vit.eval()(x)
    for fa, fb in zip(a.features, b.features):
        torch.testing.assert_close(fa, fb, atol=1e-5, rtol=1e-4)


def test_policy_weights_round_trip_and_timm_layout(tmp_path) -> None:
    torch.manual_seed(0)
    net = PolicyNet().eval()
    path = tmp_path / "policy.safetensors"
    save_policy(net, path)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(PolicyNet.from_pretrained(path).eval()(x), net(x))
    cts = CTSViT(img_size=(64, 64), embed_dim=32, depth=1, num_heads=2, num_shared=1, policy_weights=path)
    assert torch.equal(cts.policy_net.head.weight, net.head.weight)

    # A timm efficientnet_lite0 classifier checkpoint: trunk at top level plus classifier-only keys.
    timm_sd = {k.removeprefix("backbone."): v for k, v in net.state_dict().items() if k.startswith("backbone.")}
    timm_sd |= {"conv_head.weight": torch.zeros(1280, 320, 1, 1), "bn2.weight": torch.ones(1280),
                "classifier.weight": torch.zeros(1000, 1280)}
    assert "blocks.6.0.conv_pwl.weight" in timm_sd and "blocks.0.0.conv_dw.weight" in timm_sd
    torch.save({"state_dict": timm_sd}, tmp_path / "timm.pth")
    trunk = PolicyNet.from_pretrained(tmp_path / "timm.pth", allow_missing_head=True)
    assert torch.equal(trunk.backbone.conv_stem.weight, net.backbone.conv_stem.weight)
    with pytest.raises(ValueError, match=r"missing keys: \['head.bias', 'head.weight'\]"):
        PolicyNet.from_pretrained(tmp_path / "timm.pth")
    # A whole CTS model checkpoint: only its policy net is taken.
    whole = {f"backbone.policy_net.{k}": v for k, v in net.state_dict().items()} | {"backbone.cls_token": x}
    assert set(convert_policy_state_dict({"model": whole})) == set(net.state_dict())


def test_superpatch_labels() -> None:
    m = torch.zeros(1, 64, 96, dtype=torch.long)
    m[0, 0, 0] = 4  # cell (0, 0) mixed
    m[0, 32:, 32:64] = 255  # cell (1, 1) unlabelled
    m[0, 40, 70] = 255  # cell (1, 2): one class among its labelled pixels
    m[0, 33, 5] = 1  # cell (1, 0) mixed
    assert superpatch_labels(m).tolist() == [[[0, 1, 1], [0, 255, 1]]]


def _batches(ds: Synthetic, batch_size: int) -> list[dict]:
    out = []
    for i in range(0, len(ds), batch_size):
        items = [ds[j] for j in range(i, min(i + batch_size, len(ds)))]
        out.append({k: torch.stack([d[k] for d in items]) for k in ("image", "mask")})
    return out


def test_policy_training_beats_chance_on_held_out_synthetic() -> None:
    torch.manual_seed(0)
    train = _batches(Synthetic("train", num_images=8 * 34, image_size=128), 8)
    val = _batches(Synthetic("val", num_eval_images=32, image_size=128), 32)
    model = train_policy(PolicyNet(), train, iters=30, lr=1e-2, bn_batches=4)
    score = evaluate_policy(model, val)
    assert score["cells"] == 32 * 16
    assert 0.55 < score["chance"] < 0.8  # the held-out cells are not trivially one class
    assert score["accuracy"] > score["chance"] + 0.02
    # What sharing needs: cells predicted "share" are more often homogeneous than a random cell.
    assert score["share_precision"] > score["share_rate"] + 0.1


def test_train_policynet_cli_writes_loadable_weights(tmp_path) -> None:
    """`clustvit policy train` on the demo config's synthetic data: 2 iterations, tiny images."""
    assert cli.main([
        "policy", "train", "segmenter_vit-demo_synthetic", "--work-dir", str(tmp_path),
        "--iters", "2", "--batch-size", "2", "--cfg-options",
        "data.train_pipeline.scale=(64,64)", "data.train_pipeline.crop_size=(64,64)",
        "data.test_pipeline.scale=(64,64)", "data.dataset_kwargs.num_eval_images=2",
        "data.dataset_kwargs.image_size=64",
    ]) == 0
    result = json.loads((tmp_path / "policy_metrics.json").read_text())
    assert result["val"]["cells"] == 2 * 4 and result["iters"] == 2
    weights = tmp_path / "policynet.safetensors"
    assert (tmp_path / "policy_metrics.json").is_file() and (tmp_path / "config.json").is_file()
    cts = CTSViT(img_size=(64, 64), embed_dim=16, depth=1, num_heads=2, num_shared=1, policy_weights=weights)
    with torch.no_grad():
        out = cts.eval()(torch.randn(1, 3, 64, 64))
    assert out.tokens_per_block.tolist() == [[1 + 16 - 3]]
