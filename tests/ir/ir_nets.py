"""Small builders of reference networks for the graph tests (built through the public
graph API, as the DSL's elaborator does)."""
from cnnc.ir import Graph


def chain(g, x, layers):
    """Apply (op, args, kwargs) layers in sequence."""
    for op, *rest in layers:
        args = rest[0] if rest else ()
        kwargs = rest[1] if len(rest) > 1 else {}
        x = g.add_layer(op, [x], args, kwargs)
    return x


def seed_cnn():
    g = Graph("SeedCNN")
    x = g.add_input("image", (3, 64, 64))
    y = chain(g, x, [("conv", (32, 3)), ("relu",), ("maxpool", (2,)), ("conv", (64, 3)),
                     ("relu",), ("maxpool", (2,)), ("flatten",), ("dense", (128,)),
                     ("relu",), ("dense", (1,)), ("sigmoid",)])
    g.set_outputs([y])
    return g


def mnist_convnet():
    """The Keras "simple MNIST convnet" example."""
    g = Graph("mnist")
    x = g.add_input("digits", (1, 28, 28))
    y = chain(g, x, [("conv", (32,), {"kernel_size": (3, 3)}), ("relu",),
                     ("maxpool", (), {"pool_size": (2, 2)}), ("conv", (64, 3)), ("relu",),
                     ("maxpool", (2,)), ("flatten",), ("dropout", (0.5,)), ("dense", (10,)),
                     ("softmax",)])
    g.set_outputs([y])
    return g


def vgg16():
    g = Graph("VGG16")
    x = g.add_input("image", (3, 224, 224))
    for width, n in ((64, 2), (128, 2), (256, 3), (512, 3), (512, 3)):
        for _ in range(n):
            x = chain(g, x, [("conv", (width, 3), {"padding": 1}), ("relu",)])
        x = g.add_layer("maxpool", [x], (2,))
    x = chain(g, x, [("flatten",), ("dense", (4096,)), ("relu",), ("dropout",),
                     ("dense", (4096,)), ("relu",), ("dropout",), ("dense", (1000,))])
    g.set_outputs([x])
    return g


def resnet18():
    g = Graph("ResNet18")
    x = g.add_input("image", (3, 224, 224))
    x = chain(g, x, [("conv", (64, 7), {"stride": 2, "padding": 3, "bias": False}),
                     ("batchnorm",), ("relu",), ("maxpool", (3, 2), {"padding": 1})])
    channels = 64
    for width, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
        for block in range(2):
            s = stride if block == 0 else 1
            main = chain(g, x, [("conv", (width, 3), {"stride": s, "padding": 1,
                                                       "bias": False}),
                                ("batchnorm",), ("relu",),
                                ("conv", (width, 3), {"padding": 1, "bias": False}),
                                ("batchnorm",)])
            skip = x
            if s != 1 or channels != width:
                skip = chain(g, x, [("conv", (width, 1), {"stride": s, "bias": False}),
                                    ("batchnorm",)])
            x = g.add_layer("relu", [g.add_layer("add", [main, skip])])
            channels = width
    x = chain(g, x, [("global_avgpool",), ("dense", (1000,))])
    g.set_outputs([x])
    return g
