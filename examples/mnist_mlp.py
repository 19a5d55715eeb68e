"""The seed document's Keras MNIST example, line for line in jaxnet.

    python examples/mnist_mlp.py                          # MNIST, as in the seed
    python examples/mnist_mlp.py --dataset fashion_mnist  # runs offline with Debian's package

Each block quotes the Keras line it replaces. The last two stdout lines are
``test_loss: <float>`` and ``test_accuracy: <float>``.
"""

import argparse

import jaxnet as jn
from jaxnet import data

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--dataset", default="mnist", help="mnist, fashion_mnist, kmnist")
parser.add_argument("--data-dir", default=None, help="directory of MNIST-format IDX files")
parser.add_argument("--epochs", type=int, default=10)
parser.add_argument("--seed", type=int, default=0)
args = parser.parse_args()

# (X_train, y_train), (X_test, y_test) = mnist.load_data()
ds = data.load(args.dataset, data_dir=args.data_dir)
(X_train, y_train), (X_test, y_test) = (ds.train.x, ds.train.y), (ds.test.x, ds.test.y)

# X_train = X_train.reshape((X_train.shape[0], -1)).astype('float32') / 255
# X_test = X_test.reshape((X_test.shape[0], -1)).astype('float32') / 255
# The reshape is the same; the uint8 -> float32 / 255 moves into the network (rescale), so the
# images stay uint8 on the device and are converted inside the compiled step.
X_train = data.flatten(X_train)
X_test = data.flatten(X_test)
# y_train = to_categorical(y_train); y_test = to_categorical(y_test)
y_train = data.one_hot(y_train, ds.num_classes)
y_test = data.one_hot(y_test, ds.num_classes)

# model = Sequential()
# model.add(Dense(units=64, activation='relu', input_shape=(X_train.shape[1],)))
# model.add(Dense(units=64, activation='relu'))
# model.add(Dense(units=10, activation='softmax'))
model = jn.serial(
    jn.rescale(1 / 255),
    jn.dense(64, activation="relu"),
    jn.dense(64, activation="relu"),
    jn.dense(10),  # softmax is folded into the cross-entropy (log-sum-exp on logits)
)
jn.summary(model, input_shape=(X_train.shape[1],))

# model.compile(optimizer='adam', loss='categorical_crossentropy', metrics=['accuracy'])
# model.fit(X_train, y_train, epochs=10, batch_size=128, verbose=1, validation_split=0.2)
theta, history = jn.fit(
    model, X_train, y_train,
    optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy"],
    epochs=args.epochs, batch_size=128, verbose=1, validation_split=0.2, seed=args.seed,
)

# loss, accuracy = model.evaluate(X_test, y_test, verbose=0)
result = jn.evaluate(model, theta, X_test, y_test, loss="categorical_crossentropy",
                     metrics=["accuracy"])
loss, accuracy = result["loss"], result["accuracy"]

# print("Test Loss:", loss); print("Test Accuracy:", accuracy)
print(f"test_loss: {loss:.6f}")
print(f"test_accuracy: {accuracy:.6f}")
