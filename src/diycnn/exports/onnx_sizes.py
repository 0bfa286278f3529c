"""What an ONNX model allocates, known before it runs.

`check_onnx_graph` (every load of an ONNX export, whoever made it): each stored tensor, and each
tensor the graph computes for one photo, must have a known shape of at most MAX_ONNX_ELEMENTS,
worked out by onnxruntime's symbolic shape inference; loops and sub-graphs are refused. A model
that sizes a tensor from values it cannot follow is refused, never run to find out.

`freeze_sizes` (at export, on diycnn's own model): the padding that TF-style 'same' layers compute
from the photo's height and width is replaced by its values for the export's fixed photo size, so
every shape in the file can be worked out; the batch stays dynamic.
"""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import numpy as np

MAX_ONNX_ELEMENTS = 64 * 1024 * 1024  # per tensor for one photo (256 MB in fp32), as for a run (run.MAX_ACTIVATION)
SUBGRAPH_OPS = {"Loop", "Scan", "If", "SequenceMap"}  # diycnn's exports have none; their size cannot be bounded
# the inputs whose values size an op's output, folded at export: they depend on the photo size alone
FOLDED_INPUTS = {"Pad": 1, "ConstantOfShape": 0}


def _infer(model):
    """onnxruntime's symbolic shape inference (it follows the values of shape tensors), loaded from
    its file: importing the package `onnxruntime.tools` imports PyTorch where it is installed, and an
    ONNX export predicts without PyTorch."""
    name = "_diycnn_symbolic_shape_infer"
    module = sys.modules.get(name)
    if module is None:
        import onnxruntime  # noqa: PLC0415 (lazy: loads onnxruntime)

        spec = importlib.util.spec_from_file_location(
            name, Path(onnxruntime.__file__).parent / "tools" / "symbolic_shape_infer.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        sys.modules[name] = module
    return module.SymbolicShapeInference.infer_shapes(model, auto_merge=True, guess_output_rank=False)


def _with_input_shape(model, input_shape: tuple[int, ...]):
    """A copy of `model` whose one input (the photo batch) has the fixed `input_shape`."""
    import onnx  # noqa: PLC0415 (lazy: loads onnx)

    fixed = onnx.ModelProto()
    fixed.CopyFrom(model)
    stored = {t.name for t in fixed.graph.initializer}
    (photo,) = [i for i in fixed.graph.input if i.name not in stored]
    for dim, value in zip(photo.type.tensor_type.shape.dim, input_shape):
        dim.Clear()
        dim.dim_value = value
    return fixed


def _sizes(model, inferred=None) -> dict[str, int | None]:
    """Elements of each tensor `model` computes, by symbolic shape inference (None: not known)."""
    inferred = inferred or _infer(model)
    if inferred is None:
        raise ValueError("symbolic shape inference gave up")
    out: dict[str, int | None] = {}
    for info in list(inferred.graph.value_info) + list(inferred.graph.output):
        tensor = info.type.tensor_type
        fixed = tensor.HasField("shape") and all(d.HasField("dim_value") for d in tensor.shape.dim)
        out[info.name] = math.prod(max(d.dim_value, 0) for d in tensor.shape.dim) if fixed else None
    return {o: out.get(o) for n in model.graph.node for o in n.output if o}


def check_onnx_graph(path: Path, input_shape: tuple[int, ...]) -> None:
    """Bound what the ONNX file at `path` can allocate for one photo batch of `input_shape`, before
    onnxruntime sees it (see the module docstring).

    Raises:
        ValueError: naming the file and the tensor or op.
    """
    import onnx  # noqa: PLC0415 (lazy: loads onnx)

    def refuse(why: str) -> ValueError:
        return ValueError(f"'{path}' is refused: {why}. A diycnn export never does this; export the run again.")

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf's DecodeError and others
        raise ValueError(f"'{path}' is not a loadable ONNX model ({type(exc).__name__}: {str(exc)[:200]}); "
                         "export the run again.") from None
    graph = model.graph
    stored = list(graph.initializer) + [a.t for n in graph.node if n.op_type == "Constant" for a in n.attribute
                                        if a.type == onnx.AttributeProto.TENSOR]
    for t in stored:
        if t.data_location == onnx.TensorProto.EXTERNAL:
            raise refuse(f"tensor {t.name!r} keeps its data in another file")
        if math.prod(t.dims) > MAX_ONNX_ELEMENTS:
            raise refuse(f"tensor {t.name!r} has shape {list(t.dims)}")
    for node in graph.node:
        if node.op_type in SUBGRAPH_OPS or any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
                                              for a in node.attribute):
            raise refuse(f"op {node.op_type} ({node.name!r}) runs a sub-graph")
    names = {t.name for t in graph.initializer}
    inputs = [i for i in graph.input if i.name not in names]
    if len(inputs) != 1 or len(inputs[0].type.tensor_type.shape.dim) != len(input_shape):
        raise refuse(f"it takes {len(inputs)} input(s), not one {len(input_shape)}-dimensional photo batch")
    dims = [d.dim_value if d.HasField("dim_value") else None for d in inputs[0].type.tensor_type.shape.dim]
    if any(d is not None and d != v for d, v in zip(dims[1:], input_shape[1:])):
        raise refuse(f"its input is {['N' if d is None else d for d in dims]}, but its export.json prepares "
                     f"photos as {list(input_shape)}")
    try:
        sizes = _sizes(_with_input_shape(model, input_shape))
    except Exception as exc:
        raise refuse(f"its tensor shapes cannot be worked out ({type(exc).__name__}: {str(exc)[:200]})") from None
    for node in graph.node:
        for out in filter(None, node.output):
            if sizes.get(out) is None:
                raise refuse(f"the size of what op {node.op_type} ({node.name!r}) makes cannot be worked out")
            if sizes[out] > MAX_ONNX_ELEMENTS:
                raise refuse(f"op {node.op_type} ({node.name!r}) would make a tensor of {sizes[out]:,} elements for "
                             f"one photo (at most {MAX_ONNX_ELEMENTS:,})")


def _prune(graph) -> None:
    """Remove the nodes whose outputs nothing uses (after folding, what computed the pads)."""
    while True:
        used = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
        dead = [n for n in graph.node if not any(o in used for o in n.output)]
        if not dead:
            return
        for n in dead:
            graph.node.remove(n)


def freeze_sizes(path: Path, input_shape: tuple[int, ...]) -> None:
    """Rewrite diycnn's own ONNX file so that `check_onnx_graph` can work out every shape: the
    values that size a Pad or a ConstantOfShape whose output shape inference cannot follow are
    computed once (a run of the model on a blank batch of `input_shape`) and stored. They depend on
    the photo's height and width, which the export fixes, not on the batch. Callers compare the
    result with PyTorch on a batch of photos, as for every export."""
    import onnx  # noqa: PLC0415 (lazy: loads onnx)
    import onnxruntime as ort  # noqa: PLC0415 (lazy: loads onnxruntime)
    from onnx import helper, numpy_helper  # noqa: PLC0415 (lazy: loads onnx)

    model = onnx.load(str(path))
    inferred = _infer(_with_input_shape(model, input_shape))
    sizes = _sizes(model, inferred)
    wanted = sorted({n.input[FOLDED_INPUTS[n.op_type]] for n in model.graph.node
                     if n.op_type in FOLDED_INPUTS and any(sizes.get(o) is None for o in n.output if o)})
    if not wanted:
        return
    types = {v.name: v.type.tensor_type.elem_type for v in inferred.graph.value_info}
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    probe.graph.output.extend(helper.make_tensor_value_info(w, types.get(w, onnx.TensorProto.INT64), None)
                              for w in wanted)
    session = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    photo = session.get_inputs()[0].name
    values = session.run(wanted, {photo: np.zeros(input_shape, dtype=np.uint8)})
    for name, value in zip(wanted, values):
        model.graph.initializer.append(numpy_helper.from_array(np.asarray(value), f"{name}_frozen"))
        for node in model.graph.node:
            if node.op_type in FOLDED_INPUTS and node.input[FOLDED_INPUTS[node.op_type]] == name:
                node.input[FOLDED_INPUTS[node.op_type]] = f"{name}_frozen"
    _prune(model.graph)
    onnx.save(model, str(path))


__all__ = ["check_onnx_graph", "freeze_sizes", "MAX_ONNX_ELEMENTS"]
