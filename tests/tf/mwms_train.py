"""A few steps of a small Keras model under MultiWorkerMirroredStrategy,
with a custom training loop (Keras 3's `model.fit` fails under MWMS on
TensorFlow 2.21). Prints the final loss, which every worker must agree on."""
import json
import os

import tensorflow as tf

config = json.loads(os.environ["TF_CONFIG"])
print("TF_CONFIG", json.dumps(config, sort_keys=True), flush=True)
strategy = tf.distribute.MultiWorkerMirroredStrategy()
with strategy.scope():
    model = tf.keras.Sequential([tf.keras.layers.Input((4,)), tf.keras.layers.Dense(1)])
    optimizer = tf.keras.optimizers.SGD(0.05)

x = tf.random.stateless_normal((256, 4), seed=(1, 2))
y = tf.reduce_sum(x, axis=1, keepdims=True)
options = tf.data.Options()
options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
data = tf.data.Dataset.from_tensor_slices((x, y)).batch(32).repeat().with_options(options)
batches = iter(strategy.experimental_distribute_dataset(data))


@tf.function
def train_step(iterator):
    def step(xb, yb):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(model(xb, training=True) - yb))
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    xb, yb = next(iterator)
    losses = strategy.run(step, args=(xb, yb))
    return strategy.reduce(tf.distribute.ReduceOp.MEAN, losses, axis=None)


for i in range(5):
    loss = train_step(batches)
    print(f"step {i} loss {float(loss):.6f}", flush=True)
print(f"final loss {float(loss):.6f}", flush=True)
