"""
Baseline train.py: a small GPT trained under the locked runner's clock.

The one file a research agent edits. Data, tokenizer, clock and score come from the locked
`trainer.api`; the score is computed by the runner in a separate process, never here.
"""
import math
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

from trainer import api

CUDA = api.DEVICE_TYPE == "cuda"

# ---------------------------------------------------------------------------
# Hyperparameters (edit these)

SEQ_LEN = api.MAX_SEQ_LEN              # tokens per row (the locked context length)
VOCAB_SIZE = api.VOCAB_SIZE            # locked by the tokenizer
DEPTH = 8 if CUDA else 4               # transformer blocks
MODEL_DIM = 512 if CUDA else 128       # channels
HEAD_DIM = 128 if CUDA else 32         # channels per attention head
WINDOW_PATTERN = "SSSL"                # per layer: S = short sliding window, L = full context
SHORT_WINDOW = SEQ_LEN // 4            # tokens a short-window layer sees
BATCH_SIZE = 64 if CUDA else 8         # rows per optimizer step
GRAD_ACCUM = 4 if CUDA else 1          # micro-batches per optimizer step
MATRIX_LR = 0.02                       # Muon, 2-D weights inside blocks
EMBED_LR = 0.3                         # AdamW, token and value embeddings
UNEMBED_LR = 0.004 if CUDA else 0.008  # AdamW, output head
SCALAR_LR = 0.02                       # AdamW, per-layer scalars
ADAM_BETAS = (0.8, 0.95)               # AdamW momentum terms
WEIGHT_DECAY = 0.0                     # AdamW weight decay
WARMUP_FRAC = 0.0                      # fraction of the budget spent warming up the LR
WARMDOWN_FRAC = 0.5                    # fraction of the budget spent decaying the LR to FINAL_LR_FRAC
FINAL_LR_FRAC = 0.0                    # LR at the end, as a fraction of the peak
LOGIT_CAP = 15.0                       # soft cap on output logits (tanh)

# ---------------------------------------------------------------------------
# Model

# LOCKED CONTRACT: model(idx) with idx (B, T) long -> logits (B, T, VOCAB_SIZE), causal, no state.
# api.submit records exactly this forward as a graph of aten ops; the runner scores it elsewhere.


def norm(x):
    return F.rms_norm(x, (x.size(-1),))


def rotary(x, cos, sin):
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([x1 * cos + x2 * sin, x2 * cos - x1 * sin], dim=-1)


class Attention(nn.Module):
    def __init__(self, dim, head_dim, has_ve):
        super().__init__()
        self.n_head = dim // head_dim
        self.head_dim = head_dim
        self.c_q = nn.Linear(dim, dim, bias=False)
        self.c_k = nn.Linear(dim, dim, bias=False)
        self.c_v = nn.Linear(dim, dim, bias=False)
        self.c_proj = nn.Linear(dim, dim, bias=False)
        # value embeddings (a token's own vector mixed into its value) on some layers
        self.ve_lambda = nn.Parameter(torch.tensor(0.5)) if has_ve else None

    def forward(self, x, ve, cos, sin, mask):
        B, T, C = x.shape
        q = self.c_q(x).view(B, T, self.n_head, self.head_dim)
        k = self.c_k(x).view(B, T, self.n_head, self.head_dim)
        v = self.c_v(x).view(B, T, self.n_head, self.head_dim)
        if ve is not None:
            v = v + self.ve_lambda * ve.view(B, T, self.n_head, self.head_dim)
        q, k = norm(rotary(q, cos, sin)), norm(rotary(k, cos, sin))  # QK-norm keeps logits tame
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))
        if mask is None:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.c_proj(y.transpose(1, 2).reshape(B, T, C))


class MLP(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.c_fc = nn.Linear(dim, 4 * dim, bias=False)
        self.c_proj = nn.Linear(4 * dim, dim, bias=False)

    def forward(self, x):
        return self.c_proj(F.relu(self.c_fc(x)).square())  # ReLU^2


class Block(nn.Module):
    def __init__(self, dim, head_dim, has_ve):
        super().__init__()
        self.attn = Attention(dim, head_dim, has_ve)
        self.mlp = MLP(dim)

    def forward(self, x, ve, cos, sin, mask):
        x = x + self.attn(norm(x), ve, cos, sin, mask)
        return x + self.mlp(norm(x))


class GPT(nn.Module):
    def __init__(self):
        super().__init__()
        self.wte = nn.Embedding(VOCAB_SIZE, MODEL_DIM)
        self.ve_layers = [i for i in range(DEPTH) if i % 2 == 1 or i == DEPTH - 1]
        self.value_embeds = nn.ModuleDict({str(i): nn.Embedding(VOCAB_SIZE, MODEL_DIM) for i in self.ve_layers})
        self.blocks = nn.ModuleList([Block(MODEL_DIM, HEAD_DIM, i in self.ve_layers) for i in range(DEPTH)])
        self.lm_head = nn.Linear(MODEL_DIM, VOCAB_SIZE, bias=False)
        inv_freq = 1.0 / (10000 ** (torch.arange(0, HEAD_DIM, 2).float() / HEAD_DIM))
        freqs = torch.outer(torch.arange(SEQ_LEN).float(), inv_freq)
        self.register_buffer("cos", freqs.cos()[None, :, None, :], persistent=False)
        self.register_buffer("sin", freqs.sin()[None, :, None, :], persistent=False)
        pos = torch.arange(SEQ_LEN)
        causal = pos[None, :] <= pos[:, None]
        self.register_buffer("short_mask", causal & (pos[:, None] - pos[None, :] < SHORT_WINDOW), persistent=False)
        # the last layer always sees the whole context
        self.windows = [WINDOW_PATTERN[i % len(WINDOW_PATTERN)] if i < DEPTH - 1 else "L" for i in range(DEPTH)]
        self.init_weights()

    @torch.no_grad()
    def init_weights(self):
        s = 3 ** 0.5 * MODEL_DIM ** -0.5
        for b in self.blocks:
            for lin in (b.attn.c_q, b.attn.c_k, b.attn.c_v, b.mlp.c_fc):
                lin.weight.uniform_(-s, s)
            b.attn.c_proj.weight.zero_()  # residual branches start as identity
            b.mlp.c_proj.weight.zero_()
        nn.init.normal_(self.wte.weight, std=1.0)
        for e in self.value_embeds.values():
            nn.init.normal_(e.weight, std=1.0)
        nn.init.normal_(self.lm_head.weight, std=0.001)

    def forward(self, idx):
        T = idx.size(1)
        cos, sin = self.cos[:, :T], self.sin[:, :T]
        x = norm(self.wte(idx))
        for i, block in enumerate(self.blocks):
            ve = self.value_embeds[str(i)](idx) if str(i) in self.value_embeds else None
            mask = self.short_mask[:T, :T] if self.windows[i] == "S" else None
            x = block(x, ve, cos, sin, mask)
        logits = self.lm_head(norm(x)).float()
        return LOGIT_CAP * torch.tanh(logits / LOGIT_CAP)

# ---------------------------------------------------------------------------
# Optimizer: Muon for 2-D matrices in the blocks, AdamW for the rest


def newton_schulz(G, steps=5):
    """Approximately orthogonalize G (the nearest semi-orthogonal matrix), as in Muon."""
    a, b, c = 3.4445, -4.7750, 2.0315
    X = G.bfloat16() if CUDA else G.float()  # bf16 matmuls are slow on CPU
    tall = X.size(-2) > X.size(-1)
    if tall:
        X = X.mT
    X = X / (X.norm(dim=(-2, -1), keepdim=True) + 1e-7)
    for _ in range(steps):
        A = X @ X.mT
        X = a * X + (b * A + c * A @ A) @ X
    return (X.mT if tall else X).to(G.dtype)


class Muon(torch.optim.Optimizer):
    def __init__(self, params, lr, momentum=0.95):
        super().__init__(params, dict(lr=lr, momentum=momentum))

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                buf = self.state[p].setdefault("momentum", torch.zeros_like(p.grad))
                buf.lerp_(p.grad, 1 - group["momentum"])
                g = p.grad.lerp(buf, group["momentum"])  # Nesterov
                g = newton_schulz(g)
                p.add_(g, alpha=-group["lr"] * max(1.0, p.size(-2) / p.size(-1)) ** 0.5)


def lr_multiplier(progress):
    if progress < WARMUP_FRAC:
        return progress / WARMUP_FRAC
    if progress > 1 - WARMDOWN_FRAC:
        t = (1 - progress) / WARMDOWN_FRAC
        return FINAL_LR_FRAC + (1 - FINAL_LR_FRAC) * t
    return 1.0

# ---------------------------------------------------------------------------
# Training


torch.manual_seed(api.SEED)
model = GPT().to(api.DEVICE)
num_params = sum(p.numel() for p in model.parameters())
matrices = [p for b in model.blocks for p in b.parameters() if p.ndim == 2]
scalars = [p for b in model.blocks for p in b.parameters() if p.ndim < 2]
embeds = [model.wte.weight] + [e.weight for e in model.value_embeds.values()]
dim_scale = (MODEL_DIM / 768) ** -0.5  # AdamW LRs were tuned at width 768
adamw = torch.optim.AdamW([
    dict(params=embeds, lr=EMBED_LR * dim_scale),
    dict(params=[model.lm_head.weight], lr=UNEMBED_LR * dim_scale),
    dict(params=scalars, lr=SCALAR_LR),
], betas=ADAM_BETAS, eps=1e-10, weight_decay=WEIGHT_DECAY)
muon = Muon(matrices, lr=MATRIX_LR)
optimizers = [adamw, muon]
for opt in optimizers:
    for g in opt.param_groups:
        g["initial_lr"] = g["lr"]
train_model = torch.compile(model) if CUDA else model
autocast = torch.autocast("cuda", dtype=torch.bfloat16) if CUDA else torch.autocast("cpu", enabled=False)

clock = api.Clock()
loader = api.train_loader(BATCH_SIZE, SEQ_LEN)
t_wall = time.time()
loss_f = float("nan")
step_seconds = 0.0
while not clock.done():
    # Stop when half a step would cross the budget: the runner's clock counts the overrun.
    if clock.training_seconds + step_seconds / 2 >= api.TIME_BUDGET and not api.MAX_STEPS:
        break
    t_step = time.time()
    for _ in range(GRAD_ACCUM):
        x, y = next(loader)
        with autocast:
            logits = train_model(x)
        loss = F.cross_entropy(logits.view(-1, logits.size(-1)), y.view(-1))
        (loss / GRAD_ACCUM).backward()
    loss_f = loss.item()
    # Fail fast: a NaN or exploded loss never recovers within a short budget.
    if math.isnan(loss_f) or loss_f > 100:
        raise SystemExit(f"loss exploded at step {clock.steps}: {loss_f}")
    lrm = lr_multiplier(clock.progress())
    for opt in optimizers:
        for g in opt.param_groups:
            g["lr"] = g["initial_lr"] * lrm
        opt.step()
    model.zero_grad(set_to_none=True)
    clock.step()
    step_seconds = time.time() - t_step
    if clock.steps % 50 == 0:
        print(f"step {clock.steps:5d} | loss {loss_f:.4f} | lrm {lrm:.2f} | {clock.progress():.0%}", flush=True)

# Informational only: the score (val_bpb) is computed by the runner from the submitted model.
print("---")
print(f"final_train_loss: {loss_f:.4f}")
print(f"num_steps:        {clock.steps}")
print(f"num_params:       {num_params}")
print(f"wall_seconds:     {time.time() - t_wall:.1f}")
api.submit(model, num_params=num_params)
