"""CPU kernels in C, compiled at first use and called through ctypes: paged decode attention and
the elementwise parts of a decoder layer (fp32).

The portable decode path (cascade.py) spends about twenty torch ops per layer on attention: the
KV write, a gather of every row's blocks into a copy, matmuls, masks, a softmax. For the small
batches of small heads a search runs, each op costs more to dispatch than to compute, and the
gathers copy the whole context every layer. `csrc/paged_decode_cpu.c` does the same step in one
call per layer: write the new keys and values, then per row and kv head a softmax over the
row's keys read in place through its block table, rows grouped as cascade.py groups them (a
shared prompt block is transposed once and scored against all the group's queries).
`csrc/layer_ops_cpu.c` fuses the residual add with RMSNorm, applies rotary embeddings in place
and computes SiLU-and-multiply, one call each; `csrc/sample_cpu.c` samples a batch of plain rows
(sampling.py's algorithm and uniforms) in one call; `csrc/small_gemm_cpu.c` multiplies a decode
step's few rows by a weight packed in 64-column strips, streamed front to back. Other dtypes,
and machines without a C compiler, use the torch path.

Build: `cc -O3 -march=native -ffast-math -fopenmp`, linked without fast math (see COMPILE), once
per source, compiler and CPU, into `$PONDER_CACHE_DIR/kernels` (default
`~/.cache/ponder/kernels`), written atomically so concurrent processes agree.
`PONDER_CPU_KERNEL=0` or `Engine(cpu_kernel=False)` turns the kernels off (A/B runs, debugging);
`available()` says whether they loaded and, if not, why.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from ponder.engine.torch_backend.cascade import _groups, _padded

log = logging.getLogger(__name__)

CSRC = Path(__file__).with_name("csrc")
SOURCES = tuple(
    CSRC / f"{name}_cpu.c" for name in ("paged_decode", "layer_ops", "sample", "small_gemm")
)
# Compile: 512-bit vectors where the CPU has them (gcc prefers 256 by default; the kernel's sums
# are 16-float vectors, one register each) and fast math, which vectorises expf through glibc's
# libmvec. Link without it: gcc (before 13) then links crtfastmath.o, which flushes subnormals
# to zero process-wide at load (tests/test_cpu_decode.py checks the FP state is untouched).
COMPILE = ("-O3", "-march=native", "-mprefer-vector-width=512", "-ffast-math", "-fopenmp", "-fPIC")
LINK = ("-shared", "-fopenmp")
_lock = threading.Lock()
_lib: ctypes.CDLL | None = None
_why_not: str | None = None  # set once loading failed


def _cpu_key() -> str:
    """What -march=native depends on: the CPU's flags (a cache shared across machines must not
    hand one CPU another's instructions)."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line for line in f if line.startswith("flags")), "")
    except OSError:
        flags = ""
    return flags + platform.machine()


def _build(cc: str) -> Path:
    source = b"".join(p.read_bytes() for p in SOURCES)
    version = subprocess.run([cc, "--version"], capture_output=True, text=True).stdout
    flags = " ".join(COMPILE + LINK).encode()
    key = hashlib.sha256(source + flags + version.encode() + _cpu_key().encode())
    root = Path(os.environ.get("PONDER_CACHE_DIR") or Path.home() / ".cache" / "ponder")
    out = root / "kernels" / f"ponder_cpu-{key.hexdigest()[:16]}.so"
    if out.is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        built = Path(tmp) / out.name
        objects = [Path(tmp) / f"{p.stem}.o" for p in SOURCES]
        steps = [
            [cc, *COMPILE, "-c", str(p), "-o", str(o)]
            for p, o in zip(SOURCES, objects, strict=True)
        ]
        steps.append([cc, *LINK, *map(str, objects), "-o", str(built), "-lm"])
        for step in steps:
            done = subprocess.run(step, capture_output=True, text=True)
            if done.returncode != 0:
                raise RuntimeError(f"{' '.join(step)} failed: {done.stderr.strip()[:500]}")
        os.replace(built, out)  # atomic: a concurrent build writes the same bytes
    return out


def _load() -> ctypes.CDLL:
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        raise RuntimeError("no C compiler (cc or gcc) on PATH")
    lib = ctypes.CDLL(str(_build(cc)))
    i64, ptr, f32 = ctypes.c_int64, ctypes.c_void_p, ctypes.c_float
    fn = lib.ponder_paged_decode_f32
    fn.argtypes = [ptr, i64, ptr, i64, ptr, i64, ptr, ptr, i64, ptr, i64, ptr, ptr, ptr, ptr, i64]
    fn.argtypes += [ptr, i64, i64, i64, i64, i64, f32, ctypes.c_int]
    fn.restype = ctypes.c_int
    lib.ponder_add_rms_norm_f32.argtypes = [ptr, i64, ptr, ptr, ptr, ptr, i64, i64, f32]
    lib.ponder_add_rms_norm_f32.restype = None
    lib.ponder_rope_f32.argtypes = [ptr, i64, ptr, ptr, i64, i64, i64]
    lib.ponder_rope_f32.restype = None
    lib.ponder_silu_mul_f32.argtypes = [ptr, ptr, i64, i64]
    lib.ponder_silu_mul_f32.restype = None
    lib.ponder_sample_plain_f32.argtypes = [ptr, i64, i64, ptr, ptr, ptr, ptr]
    lib.ponder_sample_plain_f32.restype = ctypes.c_int
    lib.ponder_packed_gemm_f32.argtypes = [ptr, i64, ptr, ptr, ptr, i64, i64, i64, ctypes.c_int]
    lib.ponder_packed_gemm_f32.restype = None
    return lib


def available() -> tuple[bool, str]:
    """(loaded, why not): builds and loads the kernel on the first call."""
    global _lib, _why_not
    with _lock:
        if _lib is None and _why_not is None:
            if os.environ.get("PONDER_CPU_KERNEL", "1") == "0":
                _why_not = "turned off by PONDER_CPU_KERNEL=0"
            else:
                try:
                    _lib = _load()
                except (OSError, RuntimeError, AttributeError) as exc:
                    _why_not = f"the CPU kernels could not be built: {exc}"
                    log.warning("%s; the model runs its torch path", _why_not)
    return _lib is not None, _why_not or ""


def loaded() -> bool:
    """Whether the kernels are loaded already (no build, no lock)."""
    return _lib is not None


@dataclass(frozen=True)
class CpuDecodeMetadata:
    """One decode step's inputs for the kernel, shared by every layer (int64 tensors)."""

    tables: torch.Tensor  # (B, W) contiguous, 0-padded; a row reads its first ceil(len / bs)
    lens: torch.Tensor  # (B,) tokens with KV after this step, the new one included
    order: torch.Tensor  # (B,) rows in group order
    bounds: torch.Tensor  # (G + 1,) group g is order[bounds[g]:bounds[g + 1]]
    shared: torch.Tensor  # (G,) leading blocks group g's rows hold in common (0: none)
    threads: int  # the kernel splits (group, kv head) pairs over this many threads


class CpuDecodePlanner:
    """Builds `CpuDecodeMetadata` per step. Tables and groups are rebuilt only when a row's
    table or block count changed (a row gains a block every block_size steps); grouping is
    cascade.py's: rows with one first block and a common run of blocks, each wholly before
    every member's new token."""

    def __init__(self, block_size: int, kv_heads: int = 1):
        self.block_size = block_size
        self.kv_heads = kv_heads
        self._key: tuple | None = None
        self._layout: tuple[torch.Tensor, ...] = ()

    def plan(self, context_lens, block_tables) -> CpuDecodeMetadata:
        tables = [tuple(t) for t in block_tables]
        lens = np.array(context_lens, dtype=np.int64)  # (B,)
        limits = (lens - 1) // self.block_size  # (B,) blocks wholly before each new token
        threads = torch.get_num_threads()
        key = (tables, limits.tobytes(), threads)
        if key != self._key:
            self._key, self._layout = key, self._build(tables, limits, self.kv_heads, threads)
        return CpuDecodeMetadata(
            self._layout[0], torch.from_numpy(lens), *self._layout[1:], threads
        )

    @staticmethod
    def _build(tables, limits: np.ndarray, kv_heads: int, threads: int) -> tuple[torch.Tensor, ...]:
        full = _padded(tables)  # (B, W)
        groups = _groups(tables, full, limits, min_shared=1)
        grouped = {row for rows, _ in groups for row in rows}
        groups += [([row], 0) for row in range(len(tables)) if row not in grouped]
        # (group, kv head) pairs are the threads' work items: when they do not divide evenly
        # (one best-of-n group, 3 kv heads, 2 threads), split each group into the fewest parts
        # that do (each part reads the shared blocks once more).
        parts = next(
            (p for p in range(1, threads + 1) if len(groups) * p * kv_heads % threads == 0), 1
        )
        if parts > 1:
            groups = [
                (rows[i::parts], n) for rows, n in groups for i in range(min(parts, len(rows)))
            ]
        order = np.fromiter((r for rows, _ in groups for r in rows), np.int64, len(tables))
        sizes = np.fromiter((len(rows) for rows, _ in groups), np.int64, len(groups))
        bounds = np.concatenate(([0], np.cumsum(sizes)))  # (G + 1,)
        shared = np.fromiter((n for _, n in groups), np.int64, len(groups))  # (G,)
        return tuple(torch.from_numpy(x) for x in (full, order, bounds, shared))


def paged_decode(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    meta: CpuDecodeMetadata,
    scale: float,
) -> torch.Tensor:
    """q: (B, Hq, D); k, v: (B, Hkv, D) (rows may be strided, heads contiguous); caches
    (Hkv, num_blocks, bs, D) contiguous fp32 -> (B, Hq, D). Writes k, v into their slots."""
    batch, hq, d = q.shape
    hkv, num_blocks, bs, _ = k_cache.shape
    for x in (q, k, v):
        if x.stride(2) != 1 or x.stride(1) != d:
            raise ValueError("paged_decode: q, k, v need contiguous heads (stride (*, D, 1))")
    out = torch.empty((batch, hq, d), dtype=q.dtype)
    failed = _lib.ponder_paged_decode_f32(
        q.data_ptr(), q.stride(0), k.data_ptr(), k.stride(0), v.data_ptr(), v.stride(0),
        k_cache.data_ptr(), v_cache.data_ptr(), num_blocks,
        meta.tables.data_ptr(), meta.tables.stride(0), meta.lens.data_ptr(),
        meta.order.data_ptr(), meta.bounds.data_ptr(), meta.shared.data_ptr(), len(meta.shared),
        out.data_ptr(), batch, hq, hkv, d, bs, scale, meta.threads,
    )  # fmt: skip
    if failed:
        raise MemoryError("paged_decode: the kernel could not allocate its score buffers")
    return out


def _rows_contiguous(name: str, x: torch.Tensor) -> None:
    if x.dtype != torch.float32 or x.stride(-1) != 1:
        raise ValueError(f"{name}: needs fp32 rows with a contiguous last dimension")


def add_rms_norm(
    x: torch.Tensor, residual: torch.Tensor | None, weight: torch.Tensor, eps: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """x (N, H) rows, residual (N, H) or None, weight (H,) -> (RMSNorm(x + residual), the sum),
    as `RMSNorm.add`."""
    _rows_contiguous("add_rms_norm x", x)
    rows, dim = x.shape
    if residual is not None and not residual.is_contiguous():
        residual = residual.contiguous()
    res, out = torch.empty((rows, dim)), torch.empty((rows, dim))
    _lib.ponder_add_rms_norm_f32(
        x.data_ptr(), x.stride(0), None if residual is None else residual.data_ptr(),
        res.data_ptr(), out.data_ptr(), weight.data_ptr(), rows, dim, eps,
    )  # fmt: skip
    return out, res


def rope_(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, heads: int, d: int) -> None:
    """Rotary embedding in place on the first `heads` heads of each row of x (N, >= heads d);
    cos, sin: (N, 1, d) contiguous, as `model.rope_tables` makes them."""
    _rows_contiguous("rope_ x", x)
    if not (cos.is_contiguous() and sin.is_contiguous()):
        raise ValueError("rope_: cos and sin must be contiguous")
    _lib.ponder_rope_f32(x.data_ptr(), x.stride(0), cos.data_ptr(), sin.data_ptr(), x.shape[0],
                         heads, d)  # fmt: skip


def silu_mul(gate_up: torch.Tensor) -> torch.Tensor:
    """(N, 2 I) rows [gate | up] -> silu(gate) * up, (N, I)."""
    if not gate_up.is_contiguous():
        gate_up = gate_up.contiguous()
    rows, width = gate_up.shape
    out = torch.empty((rows, width // 2))
    _lib.ponder_silu_mul_f32(gate_up.data_ptr(), out.data_ptr(), rows, width // 2)
    return out


def sample_plain(logits: torch.Tensor, seeds, counters) -> tuple[list[int], list[float]]:
    """(tokens, logprobs) for rows of logits (B, V) that all sample at temperature 1 unfiltered,
    row i with draw `counters[i]` of stream `seeds[i]` (sampling.sample's plain case)."""
    logits = logits.float().contiguous()
    rows, vocab = logits.shape
    seed = np.array(seeds, dtype=np.uint64)
    count = np.array(counters, dtype=np.uint64)
    tokens = np.empty(rows, dtype=np.int64)
    logprobs = np.empty(rows, dtype=np.float32)
    failed = _lib.ponder_sample_plain_f32(
        logits.data_ptr(), rows, vocab, seed.ctypes.data, count.ctypes.data, tokens.ctypes.data,
        logprobs.ctypes.data,
    )  # fmt: skip
    if failed:
        raise MemoryError("sample_plain: could not allocate a scratch row")
    return tokens.tolist(), logprobs.tolist()


STRIP = 64  # columns per strip of a packed weight


def pack_weight(weight: torch.Tensor) -> torch.Tensor:
    """W (N, K), N a multiple of STRIP -> (N / STRIP, K, STRIP): strip s holds columns
    [s STRIP, (s + 1) STRIP) of W^T, contiguous."""
    n, k = weight.shape
    if n % STRIP:
        raise ValueError(f"pack_weight: {n} output features is not a multiple of {STRIP}")
    return weight.detach().t().reshape(k, n // STRIP, STRIP).transpose(0, 1).contiguous()


def packed_linear(x: torch.Tensor, packed: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """F.linear(x, W, bias) for x (M, K) rows from `pack_weight(W)` -> (M, N)."""
    _rows_contiguous("packed_linear x", x)
    strips, k, _ = packed.shape
    n = strips * STRIP
    out = torch.empty((x.shape[0], n))
    _lib.ponder_packed_gemm_f32(
        x.data_ptr(), x.stride(0), packed.data_ptr(), None if bias is None else bias.data_ptr(),
        out.data_ptr(), x.shape[0], k, n, torch.get_num_threads(),
    )  # fmt: skip
    return out
