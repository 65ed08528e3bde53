"""The CNN reward net's first convolution over raw frames: chunked, scale folded into the weights,
uint8 frames kept for the backward pass; the same outputs and gradients as plain autograd."""

from __future__ import annotations

import pytest
import torch

from prefrl.core.nets import InputSpec, RewardModelConfig, build_reward_net
from prefrl.core.types import PrefrlError


@pytest.mark.parametrize("batch_norm", [True, False])
def test_frame_conv_matches_plain_autograd(batch_norm: bool):
    torch.manual_seed(0)
    spec = InputSpec(obs_shape=(4, 42, 42), act_shape=(), act_n=6, obs_dtype="uint8")
    cfg = RewardModelConfig(kind="cnn", hidden=(16,), use_actions=False, dropout=0.0,
                            options={"batch_norm": batch_norm, "kernels": [6, 3], "strides": [3, 1], "channels": [8, 8]})
    net = build_reward_net(cfg, spec).train()
    net.INPUT_CHUNK = 32  # several chunks in forward and backward
    x = torch.randint(0, 255, (3, 30, 4, 42, 42), dtype=torch.uint8)
    out = net({"obs": x, "acts": torch.zeros(3, 30)})
    out.pow(2).sum().backward()
    grads = [p.grad.clone() for p in net.parameters()]
    net.zero_grad()
    frames = x.reshape(90, 4, 42, 42).contiguous(memory_format=torch.channels_last).float() / 255
    ref = net.head(net.conv(frames)).squeeze(-1).reshape(3, 30)
    ref.pow(2).sum().backward()
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-6)
    for g, p in zip(grads, net.parameters()):
        assert p.grad.abs().sum() > 0
        torch.testing.assert_close(g, p.grad, rtol=1e-3, atol=1e-4 * float(p.grad.abs().max()))


def test_cnn_embedding_is_the_heads_input_per_step():
    torch.manual_seed(0)
    spec = InputSpec(obs_shape=(4, 42, 42), act_shape=(), act_n=6, obs_dtype="uint8")
    cfg = RewardModelConfig(kind="cnn", hidden=(16,), use_actions=False, dropout=0.0,
                            options={"kernels": [6, 3], "strides": [3, 1], "channels": [8, 8]})
    net = build_reward_net(cfg, spec).eval()
    net.EVAL_CHUNK = 16  # several chunks
    x = torch.randint(0, 255, (3, 10, 4, 42, 42), dtype=torch.uint8)
    with torch.no_grad():
        emb = net.embed({"obs": x})
        assert emb.shape == (3, 10, 8 * 11 * 11)  # 42 -> 13 -> 11
        # the head on the embedding gives the net's rewards: the embedding is what the reward is read from
        torch.testing.assert_close(net.head(emb).squeeze(-1), net({"obs": x, "acts": torch.zeros(3, 10)}), rtol=1e-4, atol=1e-6)


def test_bfloat16_convolutions_track_float32_and_keep_float32_weights():
    """``precision = "bfloat16"``: the same weights give rewards within bfloat16 rounding of float32's,
    gradients that point the same way, float32 rewards, weights and gradients; an unknown name is refused."""
    torch.manual_seed(0)
    spec = InputSpec(obs_shape=(42, 42, 4), act_shape=(), act_n=6, obs_dtype="uint8")
    nets = {}
    for precision in ("float32", "bfloat16"):
        cfg = RewardModelConfig(kind="cnn", hidden=(16,), use_actions=False, dropout=0.0,
                                options={"kernels": [6, 3], "strides": [3, 1], "channels": [8, 8], "precision": precision})
        nets[precision] = build_reward_net(cfg, spec).train()
    nets["bfloat16"].load_state_dict(nets["float32"].state_dict())
    nets["bfloat16"].INPUT_CHUNK = 32  # several chunks in forward and backward
    x = torch.randint(0, 255, (3, 30, 42, 42, 4), dtype=torch.uint8)
    outs, grads = {}, {}
    for name, net in nets.items():
        outs[name] = net({"obs": x, "acts": torch.zeros(3, 30)})
        outs[name].pow(2).sum().backward()
        grads[name] = [p.grad for p in net.parameters()]
    assert outs["bfloat16"].dtype == torch.float32
    assert all(p.dtype == torch.float32 and p.grad.dtype == torch.float32 for p in nets["bfloat16"].parameters())
    scale = float(outs["float32"].detach().abs().mean())
    assert float((outs["bfloat16"] - outs["float32"]).detach().abs().mean()) < 0.03 * scale
    for g32, g16 in zip(grads["float32"], grads["bfloat16"]):
        cos = float(torch.nn.functional.cosine_similarity(g32.flatten(), g16.flatten(), dim=0))
        assert cos > 0.95, f"gradient of shape {tuple(g32.shape)}: cosine {cos:.3f} with float32's"
    net = nets["bfloat16"].eval()
    with torch.no_grad():  # eval mode, several chunks: the same rewards as one pass
        whole = net({"obs": x, "acts": torch.zeros(3, 30)})
        net.EVAL_CHUNK = 16
        torch.testing.assert_close(net({"obs": x, "acts": torch.zeros(3, 30)}), whole)
        assert whole.dtype == torch.float32
    with pytest.raises(PrefrlError, match="did you mean `bfloat16`"):
        build_reward_net(RewardModelConfig(kind="cnn", options={"precision": "bfloat"}), spec)


def test_bfloat16_on_a_cpu_without_native_support_warns(monkeypatch: pytest.MonkeyPatch):
    from prefrl.core import cnn

    monkeypatch.setattr(cnn, "cpu_has_native_bf16", lambda: False)
    cnn._warn_emulated_bf16.cache_clear()
    spec = InputSpec(obs_shape=(42, 42, 4), act_shape=(), act_n=6, obs_dtype="uint8")
    cfg = RewardModelConfig(kind="cnn", options={"kernels": [6, 3], "strides": [3, 1], "channels": [8, 8], "precision": "bfloat16"})
    with pytest.warns(UserWarning, match='emulated and likely slower than float32; set .* precision = "float32"'):
        build_reward_net(cfg, spec)
    cnn._warn_emulated_bf16.cache_clear()


@pytest.mark.parametrize("layout, use_actions, batch_norm", [
    ((4, 42, 42), False, True), ((42, 42, 4), True, True), ((42, 42), False, False)])
def test_fused_members_score_as_the_members_do_and_follow_weight_changes(layout, use_actions, batch_norm):
    """Scoring (``RewardEnsemble.scoring_forward``) runs the CNN members as one fused net: the same raw
    rewards as each member's eval forward pass, rebuilt after an optimiser step or a load; bfloat16
    members are not fused."""
    from prefrl.core.cnn import FusedCNNMembers
    from prefrl.core.ensemble import RewardEnsemble

    torch.manual_seed(0)
    spec = InputSpec(obs_shape=layout, act_shape=(), act_n=6, obs_dtype="uint8")
    cfg = RewardModelConfig(kind="cnn", hidden=(16, 8), use_actions=use_actions, dropout=0.0, members=3,
                            options={"batch_norm": batch_norm, "kernels": [6, 3], "strides": [3, 1], "channels": [8, 8]})
    ens = RewardEnsemble(spec, cfg)
    batch = {"obs": torch.randint(0, 255, (5, 30, *layout), dtype=torch.uint8), "acts": torch.randint(0, 6, (5, 30))}
    opt = torch.optim.SGD(ens.parameters(), lr=0.05)
    for step in range(3):
        with ens.evaluating():
            fused, plain = ens.scoring_forward(batch), ens(batch)
        assert isinstance(ens._scorer[1], FusedCNNMembers)
        torch.testing.assert_close(fused, plain, rtol=1e-5, atol=1e-6)
        ens.train()
        opt.zero_grad()
        ens(batch).pow(2).sum().backward()  # training mode: batch norm's running statistics move too
        opt.step()
    other = RewardEnsemble(spec, cfg)
    with ens.evaluating():
        before = ens.scoring_forward(batch)
    ens.load_state_dict(other.state_dict())
    with ens.evaluating():
        after = ens.scoring_forward(batch)
    with other.evaluating():
        plain = other(batch)
    torch.testing.assert_close(after, plain, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(after, before)
    bf16 = RewardEnsemble(spec, RewardModelConfig(**{**cfg.to_dict(), "options": {**dict(cfg.options), "precision": "bfloat16"}}))
    with bf16.evaluating():
        bf16.scoring_forward(batch)
    assert bf16._scorer[1] is None
