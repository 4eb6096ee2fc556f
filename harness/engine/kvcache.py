"""Key/value caches for the engine: transformers' DynamicLayer, grown in place instead of by copy.

`DynamicLayer.update` appends a step with `torch.cat`, which copies the whole cache every
step: for 64 GSM8K sequences of 400 tokens on SmolLM2 that is about 0.9 GB moved per
generated token, as much time as the model's own matmuls on a CPU. `SlabLayer` allocates
each layer's keys and values once for the longest sequence the batch can reach, writes each
step into place and hands attention a view of the filled part (so attention spans only the
tokens seen so far, as with DynamicLayer, where transformers' StaticLayer always spans its
whole capacity). Both kinds work with the model's own forward and mask code.

`fill_prefix` starts every row with one shared prompt prefix (computed once per generate
call by `prefix_keys_values`, with the weights of that call, and never kept), a "window"
lets the prompts after it be run in chunks of rows of similar length (so short prompts are
not padded to the longest of the pass), and `Cache.batch_select_indices` drops the rows of
finished sequences.
"""
from __future__ import annotations

import torch
from transformers.cache_utils import Cache, DynamicLayer

CACHE_KINDS = ("slab", "dynamic")


class SlabLayer(DynamicLayer):
    """One layer's keys and values in a preallocated [batch, heads, capacity, head_dim] slab."""

    def __init__(self, capacity: int):
        super().__init__()
        self.capacity, self.length = capacity, 0
        self.slab_keys = self.slab_values = None
        self.window: tuple[slice, int] | None = None

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor, batch: int | None = None):
        self.dtype, self.device = key_states.dtype, key_states.device
        rows = key_states.shape[0] if batch is None else batch
        self.slab_keys = key_states.new_empty((rows, key_states.shape[1], self.capacity, key_states.shape[-1]))
        self.slab_values = value_states.new_empty((rows, value_states.shape[1], self.capacity, value_states.shape[-1]))
        self.is_initialized = True

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        if self.window is not None:
            rows, start = self.window
            end = start + key_states.shape[-2]
            self.slab_keys[rows, :, start:end] = key_states
            self.slab_values[rows, :, start:end] = value_states
            return self.slab_keys[rows, :, :end], self.slab_values[rows, :, :end]
        end = self.length + key_states.shape[-2]
        if end > self.capacity:
            raise RuntimeError(f"SlabLayer: {end} tokens exceed its capacity of {self.capacity}")
        self.slab_keys[:, :, self.length:end] = key_states
        self.slab_values[:, :, self.length:end] = value_states
        self.length = end
        self.keys, self.values = self.slab_keys[:, :, :end], self.slab_values[:, :, :end]
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self.length if self.window is None else self.window[1]

    def open_window(self, rows: slice, start: int) -> None:
        """Route the next update to these rows, written from column `start` and attending to
        columns [0, start) before it (a prompt chunk after its rows' prefix). Columns between
        the filled part and `start` are zeroed: attention masks them, and zeros keep the
        masked products finite."""
        self.slab_keys[rows, :, self.length:start] = 0
        self.slab_values[rows, :, self.length:start] = 0
        self.window = (rows, start)

    def close_window(self, length: int) -> None:
        """Back to whole-batch updates, every row now filled up to `length`."""
        self.window, self.length = None, length
        self.keys, self.values = self.slab_keys[:, :, :length], self.slab_values[:, :, :length]

    def fill_prefix(self, keys: torch.Tensor, values: torch.Tensor, rows: int) -> None:
        self.lazy_initialization(keys, values, rows)
        self.length = 0
        self.update(keys.expand(rows, -1, -1, -1), values.expand(rows, -1, -1, -1))

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        """Keep only these rows, in this order. Rows that stay where they are are not touched:
        when the others come from beyond the kept count (as `decode.keep_order` arranges), they
        are moved into the gaps in place; any other order is gathered through a copy."""
        n, end = len(indices), self.length
        moved = (indices != torch.arange(n, device=indices.device)).nonzero().squeeze(1)
        source = indices[moved]
        if len(moved) and bool((source < n).any()):
            moved, source = torch.arange(n, device=indices.device), indices
        if len(moved):
            self.slab_keys[moved, :, :end] = self.slab_keys[source, :, :end]
            self.slab_values[moved, :, :end] = self.slab_values[source, :, :end]
        self.slab_keys, self.slab_values = self.slab_keys[:n], self.slab_values[:n]
        self.keys, self.values = self.slab_keys[:, :, :end], self.slab_values[:, :, :end]

    def reset(self) -> None:
        self.slab_keys = self.slab_values = self.keys = self.values = None
        self.length, self.is_initialized = 0, False


def new_cache(kind: str, n_layers: int, capacity: int) -> Cache:
    """A cache for one batch: "slab" (in place, `capacity` tokens) or "dynamic" (transformers'
    DynamicLayer, grown by torch.cat; kept to measure against)."""
    if kind not in CACHE_KINDS:
        raise ValueError(f"cache kind {kind!r}; choose one of {CACHE_KINDS}")
    layers = [SlabLayer(capacity) if kind == "slab" else DynamicLayer() for _ in range(n_layers)]
    return Cache(layers=layers)


def fill_prefix(cache: Cache, prefix: list[tuple[torch.Tensor, torch.Tensor]], rows: int) -> None:
    """Start each of `rows` rows with the same prefix keys and values ([1, heads, length, dim])."""
    for layer, (keys, values) in zip(cache.layers, prefix):
        if isinstance(layer, SlabLayer):
            layer.fill_prefix(keys, values, rows)
        else:
            layer.lazy_initialization(keys, values)
            layer.keys = keys.expand(rows, -1, -1, -1).contiguous()
            layer.values = values.expand(rows, -1, -1, -1).contiguous()


def prefix_keys_values(model, prefix_ids: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per layer, the keys and values of one prefix ([1, length] token ids), from the model's
    own forward (positions 0..length-1, as in every full prompt that starts with it)."""
    cache = new_cache("dynamic", n_layers(model), 0)
    model(input_ids=prefix_ids, past_key_values=cache, use_cache=True, logits_to_keep=1)
    return [(layer.keys, layer.values) for layer in cache.layers]


def kv_bytes_per_token(model) -> int:
    """Cache bytes one token takes across all layers (keys and values)."""
    return config_kv_bytes_per_token(model.config, model.dtype.itemsize)


def config_kv_bytes_per_token(config, itemsize: int) -> int:
    """The same from a model's config alone, at `itemsize` bytes a value (thicket plan: no weights)."""
    text = config.get_text_config()
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
    kv_heads = getattr(text, "num_key_value_heads", None) or text.num_attention_heads
    return 2 * text.num_hidden_layers * kv_heads * head_dim * itemsize


def n_layers(model) -> int:
    return model.config.get_text_config().num_hidden_layers
