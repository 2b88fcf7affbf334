"""The typed graph: TensorType, Value, Node, Graph; verifier and summary."""
from cnnc.ir.types import BATCH, Node, TensorType, Value
from cnnc.ir.graph import Graph

__all__ = ["BATCH", "Graph", "Node", "TensorType", "Value"]
