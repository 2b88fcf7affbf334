"""Small networks for the compiler tests, as .cnn source: each is the shape of a real
architecture (the seed CNN, LeNet-5, ResNet basic and bottleneck blocks, an Inception
module, a U-Net level) at a size that finite differences check in well under a second,
with batchnorm and dropout inside; plus a "zoo" of the remaining ops."""

SEED = """
network SeedSmall
input image: [3, 14, 14]
layers {
    conv(4, kernel=3) relu
    maxpool(2)
    conv(6, kernel=3) relu
    maxpool(2)
    flatten
    dense(8) relu
    dropout(0.3)
    dense(1) sigmoid
}
"""

LENET = """
network LeNetSmall
input digit: [1, 16, 16]
layers {
    conv(3, kernel=5, padding=2) relu
    maxpool(2)
    conv(4, kernel=3) relu
    avgpool(2)
    flatten
    dense(10) tanh
    dense(6) relu
    dense(5) softmax
}
"""

_BLOCKS = """
block basic(c, stride=1) {
    main = {
        conv(c, kernel=3, stride=stride, padding=1, bias=false) batchnorm relu
        conv(c, kernel=3, padding=1, bias=false) batchnorm
    }
    skip = if stride != 1 or channels(in) != c {
        in conv(c, kernel=1, stride=stride, bias=false) batchnorm
    } else {
        in
    }
    add(main, skip) relu
}

block bottleneck(c, stride=1) {
    main = {
        conv(c, kernel=1, bias=false) batchnorm relu
        conv(c, kernel=3, stride=stride, padding=1, bias=false) batchnorm relu
        conv(c * 4, kernel=1, bias=false) batchnorm
    }
    skip = if stride != 1 or channels(in) != c * 4 {
        in conv(c * 4, kernel=1, stride=stride, bias=false) batchnorm
    } else {
        in
    }
    add(main, skip) relu
}

block basic_conv(c, kernel, stride=1, padding=0) {
    conv(c, kernel=kernel, stride=stride, padding=padding, bias=false)
    batchnorm(epsilon=0.001) relu
}

block inception(c1, c3_reduce, c3, c5_reduce, c5, pool_proj) {
    b1 = in basic_conv(c1, 1)
    b2 = in basic_conv(c3_reduce, 1) basic_conv(c3, 3, padding=1)
    b3 = in basic_conv(c5_reduce, 1) basic_conv(c5, 3, padding=1)
    b4 = in maxpool(3, stride=1, padding=1, ceil_mode=true) basic_conv(pool_proj, 1)
    concat(b1, b2, b3, b4)
}

block double_conv(c) {
    conv(c, kernel=3, padding=1, bias=false) batchnorm relu
    conv(c, kernel=3, padding=1, bias=false) batchnorm relu
}
"""

RESNET_BASIC = """
network ResNetBasic
input image: [3, 6, 6]
""" + _BLOCKS + """
layers {
    conv(4, kernel=3, padding=1, bias=false) batchnorm relu
    basic(4)
    basic(6, stride=2)
    global_avgpool
    dense(3) softmax
}
"""

RESNET_BOTTLENECK = """
network ResNetBottleneck
input image: [8, 5, 5]
""" + _BLOCKS + """
layers {
    bottleneck(2)
    bottleneck(3, stride=2)
    global_avgpool
    dense(3) softmax
}
"""

INCEPTION = """
network InceptionSmall
input image: [5, 7, 7]
""" + _BLOCKS + """
layers {
    inception(2, 3, 4, 2, 3, 2)
    maxpool(3, stride=2, ceil_mode=true)
    global_avgpool
    dropout(0.2)
    dense(4) softmax
}
"""

UNET = """
network UNetLevel
input image: [3, 8, 8]
""" + _BLOCKS + """
layers {
    e1 = double_conv(4)
    maxpool(2) double_conv(6)
    u = conv_transpose(4, kernel=2, stride=2)
    concat(e1, u) double_conv(4)
    conv(3, kernel=1)
    softmax
}
"""

ZOO = """
network Zoo
input image: [4, 9, 9]
layers {
    conv(4, kernel=3, groups=2, padding="same") leaky_relu(0.1)
    conv(4, kernel=3, groups=4, padding=1, activation="tanh")
    conv(6, kernel=3, dilation=2, stride=2, padding=[2, 1]) sigmoid
    upsample(2)
    identity
    avgpool(3, stride=2, padding=1, count_include_pad=true)
    conv_transpose(3, kernel=3, stride=2, padding=1, output_padding=1, activation="leaky_relu")
    maxpool(2, padding="same")
    flatten
    dense(6, activation="sigmoid")
    softmax
    dense(2, activation="relu")
}
"""

# The stem's batchnorm frozen: it runs in inference form while training (as Keras).
FROZEN_BN = RESNET_BASIC.replace("network ResNetBasic", "network FrozenBN").replace(
    "conv(4, kernel=3, padding=1, bias=false) batchnorm relu",
    "conv(4, kernel=3, padding=1, bias=false) batchnorm(trainable=false) relu")

# name -> (source, loss or None for the spec's default)
NETS = {
    "seed": (SEED, None),
    "lenet": (LENET, None),
    "resnet_basic": (RESNET_BASIC, None),
    "resnet_bottleneck": (RESNET_BOTTLENECK, None),
    "inception": (INCEPTION, None),
    "unet": (UNET, None),
    "frozen_bn": (FROZEN_BN, None),
    "zoo": (ZOO, "mse"),
    "zoo_mae": (ZOO, "mae"),
}


def batch_for(model, n, rng):
    """A random batch (x, y) fitting ``model``'s input and loss."""
    x = rng.standard_normal((n,) + model.input_shape)
    out = model.output_shape
    if model.loss_name == "binary_crossentropy":
        y = rng.integers(0, 2, n)
    elif model.loss_name in ("mse", "mae"):
        y = rng.standard_normal((n,) + out)
    else:
        y = rng.integers(0, out[0], (n,) + out[1:])
    return x, y
