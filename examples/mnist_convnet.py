"""Keras's "Simple MNIST convnet" (keras.io/examples/vision/mnist_convnet), line for line in jaxnet.

    python examples/mnist_convnet.py                          # MNIST, as in the Keras example
    python examples/mnist_convnet.py --dataset fashion_mnist  # runs offline with Debian's package

Each block quotes the Keras lines it replaces. The last two stdout lines are
``test_loss: <float>`` and ``test_accuracy: <float>``.
"""

import argparse

import jaxnet as jn
from jaxnet import data

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--dataset", default="mnist", help="mnist, fashion_mnist, kmnist")
parser.add_argument("--data-dir", default=None, help="directory of MNIST-format IDX files")
parser.add_argument("--epochs", type=int, default=15)
parser.add_argument("--seed", type=int, default=0)
args = parser.parse_args()

# num_classes = 10; input_shape = (28, 28, 1)
# (x_train, y_train), (x_test, y_test) = keras.datasets.mnist.load_data()
ds = data.load(args.dataset, data_dir=args.data_dir)
(x_train, y_train), (x_test, y_test) = (ds.train.x, ds.train.y), (ds.test.x, ds.test.y)
num_classes, input_shape = ds.num_classes, (28, 28, 1)

# x_train = x_train.astype("float32") / 255; x_test = x_test.astype("float32") / 255
# x_train = np.expand_dims(x_train, -1); x_test = np.expand_dims(x_test, -1)
# The channel axis is added here; the / 255 moves into the network (rescale), so the images stay
# uint8 on the device and are converted inside the compiled step.
x_train, x_test = x_train[..., None], x_test[..., None]
# y_train = keras.utils.to_categorical(y_train, num_classes); same for y_test
y_train, y_test = data.one_hot(y_train, num_classes), data.one_hot(y_test, num_classes)

# model = keras.Sequential([
#     keras.Input(shape=input_shape),
#     layers.Conv2D(32, kernel_size=(3, 3), activation="relu"),
#     layers.MaxPooling2D(pool_size=(2, 2)),
#     layers.Conv2D(64, kernel_size=(3, 3), activation="relu"),
#     layers.MaxPooling2D(pool_size=(2, 2)),
#     layers.Flatten(),
#     layers.Dropout(0.5),
#     layers.Dense(num_classes, activation="softmax"),
# ])
model = jn.serial(
    jn.rescale(1 / 255),
    jn.conv2d(32, kernel_size=(3, 3), activation="relu"),
    jn.max_pool(pool_size=(2, 2)),
    jn.conv2d(64, kernel_size=(3, 3), activation="relu"),
    jn.max_pool(pool_size=(2, 2)),
    jn.flatten(),
    jn.dropout(0.5),
    jn.dense(num_classes),  # softmax is folded into the cross-entropy (log-sum-exp on logits)
)
# model.summary()
jn.summary(model, input_shape=input_shape)

# batch_size = 128; epochs = 15
# model.compile(loss="categorical_crossentropy", optimizer="adam", metrics=["accuracy"])
# model.fit(x_train, y_train, batch_size=batch_size, epochs=epochs, validation_split=0.1)
theta, history = jn.fit(
    model, x_train, y_train,
    loss="categorical_crossentropy", optimizer="adam", metrics=["accuracy"],
    batch_size=128, epochs=args.epochs, validation_split=0.1, seed=args.seed,
)

# score = model.evaluate(x_test, y_test, verbose=0)
result = jn.evaluate(model, theta, x_test, y_test, loss="categorical_crossentropy",
                     metrics=["accuracy"])

# print("Test loss:", score[0]); print("Test accuracy:", score[1])
print(f"test_loss: {result['loss']:.6f}")
print(f"test_accuracy: {result['accuracy']:.6f}")
