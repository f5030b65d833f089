"""Peer: the same llama/qwen2 shape trained with PyTorch on the CPU, the framework a user would pick instead.

    python -m benchmarks.peers.torch_llama --shape smollm2-135m --train last:2 --ctx 256 --threads 2 --steps 4

Random fp32 weights, batch of one window, AdamW over the same trainable set as `--train` (all: every tensor
but the token embedding, as llama.cpp; last:N: the last N blocks + final norm + head; lora:R: PEFT's LoRA of
rank R, alpha = R, on every attention and FFN projection of a frozen fp32 base, as `--adapter lora:R`).
Prints one JSON line: median seconds per step (first step excluded), peak RSS. torch and peft are optional
peers, never dependencies.
"""

from __future__ import annotations

import argparse
import json
import resource
import time


def main(argv: list[str] | None = None) -> int:
    import torch
    from torch import nn

    from benchmarks.finetune_models import SHAPES

    p = argparse.ArgumentParser()
    p.add_argument("--shape", choices=SHAPES, required=True)
    p.add_argument("--train", default="all")
    p.add_argument("--ctx", type=int, default=256)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--steps", type=int, default=4)
    args = p.parse_args(argv)
    s = SHAPES[args.shape]
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    head_dim = s.n_embd // s.n_head
    bias = s.arch == "qwen2"

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.attn_norm, self.ffn_norm = nn.RMSNorm(s.n_embd), nn.RMSNorm(s.n_embd)
            self.q = nn.Linear(s.n_embd, s.n_head * head_dim, bias=bias)
            self.k = nn.Linear(s.n_embd, s.n_head_kv * head_dim, bias=bias)
            self.v = nn.Linear(s.n_embd, s.n_head_kv * head_dim, bias=bias)
            self.o = nn.Linear(s.n_head * head_dim, s.n_embd, bias=False)
            self.gate = nn.Linear(s.n_embd, s.n_ff, bias=False)
            self.up = nn.Linear(s.n_embd, s.n_ff, bias=False)
            self.down = nn.Linear(s.n_ff, s.n_embd, bias=False)

        def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
            h = self.attn_norm(x)
            t = x.shape[1]
            q = self.q(h).view(1, t, s.n_head, head_dim).transpose(1, 2)
            k = self.k(h).view(1, t, s.n_head_kv, head_dim).transpose(1, 2)
            v = self.v(h).view(1, t, s.n_head_kv, head_dim).transpose(1, 2)
            q, k = rope(q, cos, sin), rope(k, cos, sin)
            a = nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
            x = x + self.o(a.transpose(1, 2).reshape(1, t, -1))
            h = self.ffn_norm(x)
            return x + self.down(nn.functional.silu(self.gate(h)) * self.up(h))

    def rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        x1, x2 = x[..., : head_dim // 2], x[..., head_dim // 2:]
        return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)

    embed = nn.Embedding(s.n_vocab, s.n_embd)
    blocks = nn.ModuleList(Block() for _ in range(s.n_layer))
    norm, head = nn.RMSNorm(s.n_embd), nn.Linear(s.n_embd, s.n_vocab, bias=False)
    embed.requires_grad_(False)
    if args.train.startswith("last:"):
        n = int(args.train.partition(":")[2])
        for block in blocks[: s.n_layer - n]:
            block.requires_grad_(False)
    elif args.train == "head":
        blocks.requires_grad_(False)
    if args.train.startswith("lora:"):
        from peft import LoraConfig, inject_adapter_in_model

        rank = int(args.train.partition(":")[2])
        for module in (blocks, norm, head):
            module.requires_grad_(False)
        blocks = inject_adapter_in_model(LoraConfig(r=rank, lora_alpha=rank, lora_dropout=0.0, target_modules=[
            "q", "k", "v", "o", "gate", "up", "down"]), blocks)
    params = [p for m in (blocks, norm, head) for p in m.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-5)
    inv = 1.0 / (s.rope_freq_base ** (torch.arange(0, head_dim, 2).float() / head_dim))
    angles = torch.outer(torch.arange(args.ctx).float(), inv)
    cos, sin = angles.cos(), angles.sin()
    times = []
    for _ in range(args.steps + 1):
        tokens = torch.randint(0, s.n_vocab, (1, args.ctx + 1))
        start = time.perf_counter()
        x = embed(tokens[:, :-1])
        for block in blocks:
            x = block(x, cos, sin)
        loss = nn.functional.cross_entropy(head(norm(x)).view(-1, s.n_vocab), tokens[:, 1:].reshape(-1))
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - start)
    steady = sorted(times[1:])
    print(json.dumps({"peer": "pytorch" + (" peft" if args.train.startswith("lora:") else ""),
                      "torch": torch.__version__, "shape": args.shape, "train": args.train,
                      "trained_params": sum(p.numel() for p in params), "s_per_step": steady[len(steady) // 2],
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
