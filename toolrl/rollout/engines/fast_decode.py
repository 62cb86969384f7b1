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
  trains the model also says so: `refresh(force=True)`, through `HFEngine.weights_changed()`.
- The KV cache (`KVCache`) is preallocated and written in place; it grows in chunks.
- Rows are left-padded and share one write column, so a decoding step writes one column for the
  whole batch; the boolean `valid` mask says which columns each row attends to.

It must reproduce the HF forward (tests/rollout/test_fast_decode.py compares logits to ~1e-5 in
fp32). Only plain (non-PEFT) Qwen2/Qwen3 CausalLMs with full attention, SiLU MLPs and a static
RoPE are supported (`supports`); the engine falls back to the HF forward for anything else.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

SUPPORTED_MODELS = ("Qwen2ForCausalLM", "Qwen3ForCausalLM")
STATIC_ROPE = ("default", "linear", "llama3", "yarn")  # inv_freq and scaling never change
GROWTH = 128  # cache columns added at a time
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


@dataclass
class KVCache:
    """Keys and values of a batch of left-padded rows, written in place.

    Rows [0, rows) are in use (the batch); later rows are spare room for requests that join.
    Columns [start, end) are in use; all rows write column `end` next. `valid[b, c]` is True
    where column c holds one of row b's tokens (False: padding). For rows in use, columns
    outside [start, end) are never valid, and columns inside hold finite numbers (padding's
    attention weight is 0, but 0 · NaN is NaN).

    A finished row's slot is refilled by moving the last row into it (`keep`), and new rows go
    into spare slots right-aligned at `end` (`append`): neither copies the whole cache unless
    it must grow.
    """

    data: Tensor  # [layers, 2 (k, v), row capacity, kv_heads, column capacity, head_dim]
    valid: Tensor  # [row capacity, column capacity] bool
    rows: int
    start: int
    end: int

    def __len__(self) -> int:
        return self.rows

    @classmethod
    def allocate(cls, like: Tensor, rows: int, width: int, capacity: int = 0) -> KVCache:
        """Room for `rows` rows (`capacity` if larger) and `width` used columns plus GROWTH,
        uninitialised: the caller writes columns [0, width) of the rows in use, and a column
        past `end` is always written before it is read."""
        layers, kv, _, heads, _, dim = like.shape
        slots = max(rows, capacity)
        data = like.new_empty(layers, kv, slots, heads, width + GROWTH, dim)
        valid = torch.zeros(slots, width + GROWTH, dtype=torch.bool, device=like.device)
        return cls(data, valid, rows, 0, width)

    def layer(self, index: int) -> Tensor:
        """Layer `index`'s keys and values of the rows in use, [2, rows, kv_heads, C, head_dim]."""
        return self.data[index, :, : self.rows]

    def reserve(self) -> None:
        """Make room for one more column (moving the used columns to the front if needed)."""
        if self.end < self.data.shape[4]:
            return
        grown = KVCache.allocate(self.data, self.rows, self.end - self.start, self.data.shape[2])
        grown.copy_rows(self, slice(0, self.rows), slice(0, self.rows))
        self.data, self.valid, self.start, self.end = grown.data, grown.valid, 0, grown.end

    def copy_rows(self, source: KVCache, rows, source_rows, first: int | None = None) -> None:
        """Write `source_rows` of `source`, columns [first (default: its start), its end), into
        `rows`, right-aligned at this cache's `end`."""
        used = slice(source.start if first is None else first, source.end)
        columns = slice(self.end - (used.stop - used.start), self.end)
        self.data[:, :, rows, :, columns] = source.data[:, :, source_rows, :, used]
        self.valid[rows, columns] = source.valid[source_rows, used]

    def row(self, index: int) -> Tensor:
        """Row `index`'s keys and values without padding, [layers, 2, kv_heads, n, head_dim]."""
        columns = self.valid[index, self.start : self.end].nonzero().squeeze(-1) + self.start
        return self.data[:, :, index].index_select(3, columns)

    def gather(self, rows: Tensor) -> KVCache:
        """A new cache of `rows` (repeats allowed), without columns that are padding in all."""
        valid = self.valid[rows, self.start : self.end]
        first = self.start + int(valid.any(0).long().argmax())
        out = KVCache.allocate(self.data, len(rows), self.end - first)
        out.copy_rows(self, slice(None), rows, first)
        return out

    def keep(self, rows: list[int]) -> list[int]:
        """Keep only `rows` (ascending), in place: each freed slot below the new row count takes
        one of the surviving rows above it. Returns the old index of each new row."""
        count, survivors = len(rows), set(rows)
        holes = [i for i in range(count) if i not in survivors]
        movers = [r for r in rows if r >= count]
        if holes:
            to = torch.tensor(holes, device=self.data.device)
            source = torch.tensor(movers, device=self.data.device)
            used = slice(self.start, self.end)
            self.data[:, :, to, :, used] = self.data[:, :, source, :, used]
            self.valid[to] = self.valid[source]
        order = list(range(count))
        for hole, mover in zip(holes, movers, strict=True):
            order[hole] = mover
        self.rows = count
        if count:  # leading columns no remaining row attends to are no longer in use
            in_use = self.valid[:count, self.start : self.end].any(0)
            self.start += int(in_use.long().argmax())
        return order

    def append(self, other: KVCache) -> KVCache:
        """This cache with `other`'s rows after its own: in place when there are spare rows and
        columns enough, otherwise a new, larger cache."""
        width = other.end - other.start
        rows = slice(self.rows, self.rows + other.rows)
        if rows.stop > self.data.shape[2] or width > self.end:
            out = KVCache.allocate(
                self.data, rows.stop, max(self.end - self.start, width), 2 * rows.stop
            )
            out.data[:, :, : out.rows, :, : out.end].zero_()
            out.copy_rows(self, slice(0, self.rows), slice(0, self.rows))
            out.copy_rows(other, rows, slice(0, other.rows))
            return out
        start = min(self.start, self.end - width)
        self.data[:, :, : rows.stop, :, start : self.start].zero_()
        self.data[:, :, rows, :, self.start : self.end - width].zero_()
        self.valid[rows] = False
        self.copy_rows(other, rows, slice(0, other.rows))
        self.rows, self.start = rows.stop, start
        return self


class _Linear:
    """y = x·Wᵀ + b. On the CPU in float32 the weight is also kept in oneDNN's blocked layout
    (packed once per weight version): its matmuls are 10-35% faster than `F.linear` at the
    decode's few rows (benchmarks/train_step.py: the rollout of a step 20-25% faster). The
    packed copy costs the weight's memory again; `pack=False` (a large LM head) skips it."""

    def __init__(self, weight: Tensor, bias: Tensor | None = None, pack: bool = True):
        self.weight, self.bias, self.packed = weight, bias, None
        if pack and _can_pack(weight):
            self.packed = torch.ops.mkldnn._reorder_linear_weight(weight, 32)

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
        x = self._forward(input_ids, positions, cache, slice(0, width), mask[:, None])
        return x, cache

    @torch.no_grad()
    def prefill_after(
        self, prefixes: list[Tensor], suffixes: list[list[int]], pad_token_id: int = 0
    ) -> tuple[Tensor, KVCache, Tensor]:
        """Rows that continue already-computed prefixes: only the suffixes are run.

        `prefixes[i]` is a row's cached keys and values [layers, 2, kv_heads, n_i, head_dim]
        (`KVCache.row`), `suffixes[i]` the tokens that follow them. The cache holds the prefixes
        right-aligned in columns [0, P) and the left-padded suffixes in [P, P + S), so padding
        may sit between a row's prefix and suffix: the `valid` mask, not adjacency, says what a
        query attends to, and positions continue each row's own prefix.
        Returns the logits of each row's last position [B, V], the cache, and the position of
        each row's next token [B].
        """
        rows, device = len(prefixes), self.model.lm_head.weight.device
        lengths = torch.tensor([p.shape[3] for p in prefixes], device=device)
        width, span = int(lengths.max()), max(len(s) for s in suffixes)
        cache = KVCache.allocate(self._template(), rows, width + span)
        cache.data[:, :, :, :, :width].zero_()  # padding must be finite (see `KVCache`)
        ids = torch.full((rows, span), pad_token_id, dtype=torch.long)
        for row, (prefix, suffix) in enumerate(zip(prefixes, suffixes, strict=True)):
            cache.data[:, :, row, :, width - prefix.shape[3] : width] = prefix
            cache.valid[row, width - prefix.shape[3] : width] = True
            cache.valid[row, width + span - len(suffix) : width + span] = True
            ids[row, span - len(suffix) :] = torch.tensor(suffix)
        ids, valid = ids.to(device), cache.valid[:, width : width + span]
        positions = lengths[:, None] + (valid.long().cumsum(-1) - 1).clamp(min=0)
        eye = torch.eye(span, dtype=torch.bool, device=device)
        own = (valid[:, None, :] | eye) & torch.ones_like(eye).tril()
        mask = torch.cat([cache.valid[:, None, :width].expand(-1, span, -1), own], dim=-1)
        logits = self._forward(ids, positions, cache, slice(width, width + span), mask[:, None])
        return logits, cache, positions[:, -1] + 1

    @torch.no_grad()
    def decode(self, tokens: Tensor, positions: Tensor, cache: KVCache) -> Tensor:
        """One token per row [B] at `positions` [B] → next-token logits [B, V]; extends `cache`."""
        cache.reserve()
        column = cache.end
        cache.valid[: cache.rows, column] = True
        cache.end += 1
        mask = cache.valid[: cache.rows, None, None, cache.start : cache.end]
        return self._forward(
            tokens[:, None], positions[:, None], cache, slice(column, column + 1), mask
        )

    def _forward(self, ids: Tensor, positions: Tensor, cache: KVCache, columns, mask) -> Tensor:
        """The layers over ids [B, T] written at cache `columns`; logits of the last position."""
        base = self.model.model
        x = F.embedding(ids, base.embed_tokens.weight)
        cos, sin = self._rope(positions, x)
        for index, layer in enumerate(self._layers):
            x = self._layer(layer, x, cos, sin, cache.layer(index), cache, columns, mask)
        last = _rms_norm(x[:, -1], base.norm.weight, self.eps)
        return self._head(last).float()

    def _layer(self, w: _Layer, x, cos, sin, kv: Tensor, cache: KVCache, columns, mask) -> Tensor:
        rows, length, _ = x.shape
        qkv = w.qkv(_rms_norm(x, w.input_norm, self.eps))
        qkv = qkv.view(rows, length, -1, self.head_dim)
        qk, v = qkv.split([self.q_heads + self.kv_heads, self.kv_heads], dim=2)
        if w.qk_norm is not None:
            qk = _rms_norm(qk, w.qk_norm, self.eps)
        # RoPE: q·cos + rotate_half(q)·sin; roll(q) = [q₂, q₁] and sin carries the sign [−s, s].
        qk = torch.addcmul(qk * cos, qk.roll(self.head_dim // 2, dims=-1), sin)
        q, k = qk.split([self.q_heads, self.kv_heads], dim=2)
        kv[0, :, :, columns] = k.transpose(1, 2)
        kv[1, :, :, columns] = v.transpose(1, 2)
        used = slice(cache.start, cache.end)
        attention = F.scaled_dot_product_attention(
            q.transpose(1, 2),
            kv[0, :, :, used],
            kv[1, :, :, used],
            attn_mask=mask,
            scale=self.scale,
            enable_gqa=True,
        )
        attention = attention.transpose(1, 2).reshape(rows, length, -1)
        x = x + w.o_proj(attention)
        gate, up = w.gate_up(_rms_norm(x, w.post_norm, self.eps)).chunk(2, dim=-1)
        return x + w.down(F.silu(gate) * up)

    def _rope(self, positions: Tensor, like: Tensor) -> tuple[Tensor, Tensor]:
        """cos and signed sin [B, T, 1, head_dim] for `positions`, from a table grown on demand."""
        needed = int(positions.max()) + 1
        table = self._cos
        if table is None or table.shape[0] < needed or table.dtype != like.dtype:
            self._build_rope(max(needed, 2 * (0 if table is None else table.shape[0]), 256), like)
        return self._cos[positions].unsqueeze(2), self._sin[positions].unsqueeze(2)

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
