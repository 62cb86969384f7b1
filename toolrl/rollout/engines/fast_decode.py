"""A lean decoding forward for Qwen2/Qwen3 causal LMs, over the model's own weights.

Why: with a small model, a decoding step of transformers' modules is mostly per-op Python
overhead (module calls, mask creation, a `torch.cat` of the whole KV cache per layer per step),
not arithmetic. This forward computes the same function with fewer, larger ops:

    x ← embed(token)
    per layer:  h = RMSNorm(x);  [q k v] = h·[W_q W_k W_v]ᵀ (+ b);  q, k ← RMSNorm_head (Qwen3)
                q, k ← q·cos θ_p + rotate_half(q)·sin θ_p   (RoPE, θ_p a table row for position p)
                x ← x + W_o · softmax(q kᵀ/√d + mask) v
                x ← x + W_down · (silu(h' W_gateᵀ) ⊙ h' W_upᵀ),  h' = RMSNorm(x)
    logits = RMSNorm(x) · W_lmᵀ

- q/k/v and gate/up are fused into one matmul each, and on the CPU every matmul's weight is
  packed for oneDNN (`_Linear`). The fused and packed weights are copies, so they are rebuilt
  whenever a parameter was replaced or its in-place version counter moved
  (`load_state_dict`, most optimizers); `refresh()` checks that cheaply at each `serve`. Not every
  in-place update moves the counter (`torch.optim.AdamW(fused=True)` does not), so whoever
  trains the model also says so: `refresh(force=True)`, through `HFEngine.weights_updated()`.
- The KV cache (`KVCache`, kv_cache.py) is preallocated and written in place; it grows in
  chunks.
- Rows are left-padded and share one write column, so a decoding step writes one column for the
  whole batch; the boolean `valid` mask says which columns each row attends to.
- A forward runs *segments* (`_Segment`): rows of the cache with T new tokens each. Everything
  but attention sees one flat batch of tokens, so a decoding step (T = 1 for every running row)
  and rows joining it with several new tokens each (`decode_and_join`) share one forward.

It must reproduce the HF forward (tests/rollout/test_fast_decode.py compares logits to ~1e-5 in
fp32). Only plain (non-PEFT) Qwen2/Qwen3 CausalLMs with full attention, SiLU MLPs and a static
RoPE are supported (`supports`); the engine falls back to the HF forward for anything else.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from toolrl.rollout.engines.kv_cache import KVCache

SUPPORTED_MODELS = ("Qwen2ForCausalLM", "Qwen3ForCausalLM")
STATIC_ROPE = ("default", "linear", "llama3", "yarn")  # inv_freq and scaling never change
PACKED_HEAD_MAX = 1 << 24  # LM heads up to 64 MiB in float32 get a packed copy (`_Linear`)


def supports(model) -> bool:
    """True for a plain Qwen2/Qwen3 CausalLM whose forward this module reproduces exactly."""
    config = getattr(model, "config", None)
    if type(model).__name__ not in SUPPORTED_MODELS or config is None:
        return False
    rope = getattr(config, "rope_parameters", None) or {}
    layer_types = getattr(config, "layer_types", None) or ["full_attention"]
    return (
        getattr(config, "hidden_act", None) == "silu"
        and rope.get("rope_type", "default") in STATIC_ROPE
        and all(t == "full_attention" for t in layer_types)
        and not getattr(model, "peft_config", None)
        and not getattr(model, "hf_quantizer", None)
    )


class _Linear:
    """y = x·Wᵀ + b. On the CPU in float32 the weight is also kept in oneDNN's blocked layout
    (packed once per weight version): its matmuls are 10-35% faster than `F.linear` at the
    decode's few rows (benchmarks/train_step.py: the rollout of a step 20-25% faster). The
    packed copy costs the weight's memory again; `pack=False` (a large LM head) skips it."""

    def __init__(self, weight: Tensor, bias: Tensor | None = None, pack: bool = True):
        self.weight, self.bias, self.packed = weight, bias, None
        if pack and _can_pack(weight):
            self.packed = torch.ops.mkldnn._reorder_linear_weight(weight, 32)

    # A packed tensor has no storage to copy or pickle: copies carry the weight and pack anew.
    def __getstate__(self) -> dict:
        return {"weight": self.weight, "bias": self.bias, "pack": self.packed is not None}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["weight"], state["bias"], state["pack"])

    def __call__(self, x: Tensor) -> Tensor:
        if self.packed is None:
            return F.linear(x, self.weight, self.bias)
        flat = x.reshape(-1, x.shape[-1])
        y = torch.ops.mkldnn._linear_pointwise(flat, self.packed, self.bias, "none", [], "")
        return y.view(*x.shape[:-1], y.shape[-1])


def _can_pack(weight: Tensor) -> bool:
    return (
        weight.device.type == "cpu"
        and weight.dtype == torch.float32
        and torch.backends.mkldnn.is_available()
        and hasattr(torch.ops.mkldnn, "_reorder_linear_weight")
    )


@dataclass
class _Layer:
    input_norm: Tensor
    qkv: _Linear  # weight [(q_heads + 2·kv_heads)·head_dim, hidden]
    qk_norm: (
        Tensor | None
    )  # [q_heads + kv_heads, head_dim]: q_norm's weight per q head, then k_norm's
    o_proj: _Linear
    post_norm: Tensor
    gate_up: _Linear  # weight [2·intermediate, hidden]
    down: _Linear


@dataclass
class _Segment:
    """Cache rows that run `ids` [r, T] in one forward: their tokens' keys and values go to
    cache `columns` (T of them), and `mask` [r, 1, T, used columns] says what each attends to."""

    rows: slice
    ids: Tensor
    positions: Tensor
    columns: slice
    mask: Tensor


class FastDecoder:
    """Prefill and decode forwards equal to the HF model's, with a preallocated KV cache."""

    def __init__(self, model):
        if not supports(model):
            raise ValueError(f"FastDecoder does not support {type(model).__name__}")
        self.model = model
        config = model.config
        self.eps = config.rms_norm_eps
        self.q_heads = config.num_attention_heads
        self.kv_heads = config.num_key_value_heads
        self.head_dim = getattr(config, "head_dim", None) or (
            config.hidden_size // config.num_attention_heads
        )
        self.scale = self.head_dim**-0.5
        self._key: tuple | None = None
        self._layers: list[_Layer] = []
        self._cos = self._sin = None

    def refresh(self, force: bool = False) -> bool:
        """Rebuild the fused weights if `force` or a parameter visibly changed since they were
        built; True if rebuilt (keys and values cached under the old weights are then stale)."""
        key = tuple((p.data_ptr(), p._version) for p in self.model.parameters())
        if key == self._key and not force:
            return False
        with torch.no_grad():
            self._layers = [self._fuse(layer) for layer in self.model.model.layers]
            head = self.model.lm_head.weight
            self._head = _Linear(head, pack=head.numel() <= PACKED_HEAD_MAX)
        self._key = key
        return True

    def _fuse(self, layer) -> _Layer:
        attn, mlp = layer.self_attn, layer.mlp
        projections = (attn.q_proj, attn.k_proj, attn.v_proj)
        bias = None
        if attn.q_proj.bias is not None:
            bias = torch.cat([p.bias for p in projections])
        qk_norm = None
        if getattr(attn, "q_norm", None) is not None:
            qk_norm = torch.cat(
                [
                    attn.q_norm.weight.expand(self.q_heads, -1),
                    attn.k_norm.weight.expand(self.kv_heads, -1),
                ]
            )
        return _Layer(
            input_norm=layer.input_layernorm.weight,
            qkv=_Linear(torch.cat([p.weight for p in projections]), bias),
            qk_norm=qk_norm,
            o_proj=_Linear(attn.o_proj.weight, attn.o_proj.bias),
            post_norm=layer.post_attention_layernorm.weight,
            gate_up=_Linear(torch.cat([mlp.gate_proj.weight, mlp.up_proj.weight])),
            down=_Linear(mlp.down_proj.weight),
        )

    @torch.no_grad()
    def prefill(
        self, input_ids: Tensor, attention_mask: Tensor, positions: Tensor
    ) -> tuple[Tensor, KVCache]:
        """Left-padded prompts [B, P] → logits of each row's last position [B, V], and their cache.

        Query t attends to the row's valid keys s ≤ t. A padding query attends to itself only,
        so its outputs, which nothing reads, stay finite.
        """
        rows, width = input_ids.shape
        valid = attention_mask.bool()
        eye = torch.eye(width, dtype=torch.bool, device=valid.device)
        causal = torch.ones_like(eye).tril()
        mask = (valid[:, None, :] | eye) & causal
        cache = KVCache.allocate(self._template(), rows, width)
        cache.valid[:, :width] = valid
        segment = _Segment(slice(0, rows), input_ids, positions, slice(0, width), mask[:, None])
        return self._forward([segment], cache), cache

    @torch.no_grad()
    def prefill_after(
        self, prefixes: list[Tensor], suffixes: list[list[int]], pad_token_id: int = 0
    ) -> tuple[Tensor, KVCache, Tensor]:
        """Rows that continue already-computed prefixes: only the suffixes are run.

        `prefixes[i]` is a row's cached keys and values [layers, 2, kv_heads, n_i, head_dim]
        (`KVCache.row`), `suffixes[i]` the tokens that follow them. Returns the logits of each
        row's last position [B, V], a new cache holding the rows (laid out as `KVCache.join`
        does), and the position of each row's next token [B]. (`decode_and_join` does the same
        for rows joining a running batch, inside its decoding step.)
        """
        span = max(len(s) for s in suffixes)
        widest = max(prefix.shape[3] for prefix in prefixes)
        cache = KVCache.allocate(self._template(), 0, widest + span - 1, len(prefixes))
        cache.start = cache.end  # no row in use yet
        none = torch.zeros(0, dtype=torch.long, device=cache.data.device)
        logits, next_positions = self.decode_and_join(
            none, none, cache, prefixes, suffixes, pad_token_id
        )
        return logits, cache, next_positions

    @torch.no_grad()
    def decode(self, tokens: Tensor, positions: Tensor, cache: KVCache) -> Tensor:
        """One token per row [B] at `positions` [B] → next-token logits [B, V]; extends `cache`."""
        return self.decode_and_join(tokens, positions, cache)[0]

    @torch.no_grad()
    def decode_and_join(
        self,
        tokens: Tensor,
        positions: Tensor,
        cache: KVCache,
        prefixes: list[Tensor] = (),
        suffixes: list[list[int]] = (),
        pad_token_id: int = 0,
    ) -> tuple[Tensor, Tensor]:
        """One decoding step of the cache's rows (`tokens`, `positions` [B]) and, in the same
        forward, new rows that continue stored prefixes (as `prefill_after`): the next turn of a
        trajectory whose tool has answered joins the running batch without a forward of its own.

        Joining rows take the cache rows after the running ones (`KVCache.join`): their
        suffixes, left-padded to the longest, fill the columns that end with this step's column,
        so padding may sit between a row's prefix and its suffix; the `valid` mask, not
        adjacency, says what a query attends to, and positions continue each row's own prefix.
        Returns the next-token logits [B + J, V] (running rows, then joining rows) and the
        position of each joining row's next token [J].
        """
        cache.reserve()
        running, joining = cache.rows, None
        if prefixes:  # (may move the used columns: `column` is read after)
            joining = self._join(cache, prefixes, suffixes, pad_token_id)
        column = cache.end
        cache.valid[:running, column] = True
        cache.end += 1
        segments = []
        if running:
            mask = cache.valid[:running, None, None, cache.start : cache.end]
            segments.append(
                _Segment(
                    slice(0, running),
                    tokens[:, None],
                    positions[:, None],
                    slice(column, column + 1),
                    mask,
                )
            )
        next_positions = positions.new_zeros(0)
        if joining is not None:
            rows, ids, joined_positions = joining
            span = ids.shape[1]
            columns = torch.arange(cache.start, cache.end, device=ids.device)
            queries = columns[-span:, None]
            own = cache.valid[rows, None, cache.start : cache.end] & (columns <= queries)
            mask = own | (columns == queries)  # a padding query attends to itself only
            segments.append(
                _Segment(
                    rows, ids, joined_positions, slice(cache.end - span, cache.end), mask[:, None]
                )
            )
            next_positions = joined_positions[:, -1] + 1
        return self._forward(segments, cache), next_positions

    def _join(self, cache: KVCache, prefixes, suffixes, pad_token_id: int):
        """Place the joining rows in the cache; their (rows, left-padded ids, positions)."""
        device = cache.data.device
        span = max(len(s) for s in suffixes)
        rows = cache.join(prefixes, span)
        ids = torch.full((len(suffixes), span), pad_token_id, dtype=torch.long)
        for row, suffix in enumerate(suffixes):
            ids[row, span - len(suffix) :] = torch.tensor(suffix)
            cache.valid[rows.start + row, cache.end + 1 - len(suffix) : cache.end + 1] = True
        lengths = torch.tensor([prefix.shape[3] for prefix in prefixes], device=device)
        valid = cache.valid[rows, cache.end + 1 - span : cache.end + 1]
        positions = lengths[:, None] + (valid.long().cumsum(-1) - 1).clamp(min=0)
        return rows, ids.to(device), positions

    def _forward(self, segments: list[_Segment], cache: KVCache) -> Tensor:
        """The layers over every segment's tokens, as one flat batch of tokens except in
        attention; the logits of each segment row's last position [Σ rows, V], in order."""
        base = self.model.model
        ids = torch.cat([s.ids.reshape(-1) for s in segments])
        x = F.embedding(ids, base.embed_tokens.weight)  # [N, hidden]
        cos, sin = self._rope(torch.cat([s.positions.reshape(-1) for s in segments]), x)
        for index, layer in enumerate(self._layers):
            x = self._layer(layer, x, cos, sin, cache, index, segments)
        if any(s.ids.shape[1] > 1 for s in segments):  # keep each row's last token
            last, offset = [], 0
            for s in segments:
                rows, length = s.ids.shape
                last.append(offset + length - 1 + length * torch.arange(rows, device=x.device))
                offset += rows * length
            x = x[torch.cat(last)]
        return self._head(_rms_norm(x, base.norm.weight, self.eps)).float()

    def _layer(self, w: _Layer, x, cos, sin, cache: KVCache, index: int, segments) -> Tensor:
        qkv = w.qkv(_rms_norm(x, w.input_norm, self.eps)).view(len(x), -1, self.head_dim)
        qk, v = qkv.split([self.q_heads + self.kv_heads, self.kv_heads], dim=1)
        if w.qk_norm is not None:
            qk = _rms_norm(qk, w.qk_norm, self.eps)
        # RoPE: q·cos + rotate_half(q)·sin; roll(q) = [q₂, q₁] and sin carries the sign [−s, s].
        qk = torch.addcmul(qk * cos, qk.roll(self.head_dim // 2, dims=-1), sin)
        q, k = qk.split([self.q_heads, self.kv_heads], dim=1)
        parts, offset, used = [], 0, slice(cache.start, cache.end)
        for s in segments:
            rows, length = s.ids.shape
            tokens = slice(offset, offset + rows * length)
            kv = cache.data[index, :, s.rows]
            kv[0, :, :, s.columns] = k[tokens].view(rows, length, -1, self.head_dim).transpose(1, 2)
            kv[1, :, :, s.columns] = v[tokens].view(rows, length, -1, self.head_dim).transpose(1, 2)
            attention = F.scaled_dot_product_attention(
                q[tokens].view(rows, length, -1, self.head_dim).transpose(1, 2),
                kv[0, :, :, used],
                kv[1, :, :, used],
                attn_mask=s.mask,
                scale=self.scale,
                enable_gqa=True,
            )
            parts.append(attention.transpose(1, 2).reshape(rows * length, -1))
            offset += rows * length
        x = x + w.o_proj(parts[0] if len(parts) == 1 else torch.cat(parts))
        gate, up = w.gate_up(_rms_norm(x, w.post_norm, self.eps)).chunk(2, dim=-1)
        return x + w.down(F.silu(gate) * up)

    def _rope(self, positions: Tensor, like: Tensor) -> tuple[Tensor, Tensor]:
        """cos and signed sin [N, 1, head_dim] for `positions` [N], from a table grown on demand."""
        needed = int(positions.max()) + 1
        table = self._cos
        if table is None or table.shape[0] < needed or table.dtype != like.dtype:
            self._build_rope(max(needed, 2 * (0 if table is None else table.shape[0]), 256), like)
        return self._cos[positions].unsqueeze(1), self._sin[positions].unsqueeze(1)

    def _build_rope(self, length: int, like: Tensor) -> None:
        # The same arithmetic as transformers' rotary embedding: θ = p·inv_freq, emb = [θ, θ].
        rotary = self.model.model.rotary_emb
        inv_freq = rotary.inv_freq.to(device=like.device, dtype=torch.float)
        freqs = torch.arange(length, device=like.device).float()[:, None] * inv_freq[None, :]
        emb = torch.cat([freqs, freqs], dim=-1)
        cos, sin = emb.cos() * rotary.attention_scaling, emb.sin() * rotary.attention_scaling
        half = self.head_dim // 2
        self._cos = cos.to(like.dtype)
        self._sin = torch.cat([-sin[:, :half], sin[:, half:]], dim=-1).to(like.dtype)

    def _template(self) -> Tensor:
        weight = self.model.lm_head.weight
        layers = len(self._layers)
        return weight.new_empty(layers, 2, 0, self.kv_heads, 0, self.head_dim)


def _rms_norm(x: Tensor, weight: Tensor, eps: float) -> Tensor:
    """RMSNorm as transformers' Qwen modules compute it: w · x / √(mean(x²) + ε), in float32.

    A float32 input takes torch's fused kernel (one op instead of six; the same arithmetic);
    other dtypes are normalised in float32 and cast back before the weight, as transformers does.
    """
    if x.dtype == torch.float32:
        if weight.dim() == 1:
            return F.rms_norm(x, weight.shape, weight, eps)
        return F.rms_norm(x, x.shape[-1:], None, eps) * weight  # a weight per head
    normed = x.float()
    normed = normed * torch.rsqrt(normed.pow(2).mean(-1, keepdim=True) + eps)
    return weight * normed.to(x.dtype)
