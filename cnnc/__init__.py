"""cnnc: a declarative compiler for convolutional neural networks."""
from cnnc.errors import CnncError
from cnnc.threads import get_num_threads, set_num_threads
from cnnc.model import Model, compile

__version__ = "0.1.0"
__all__ = ["CnncError", "Model", "compile", "get_num_threads", "set_num_threads",
           "__version__"]
