"""A hand-built model whose scores depend only on one known 8x8 pixel block.

Explainers and trust metrics are checked against it: a correct map must put
its evidence on that block and nowhere else.
"""

import keras
import numpy as np

ROWS, COLS = slice(16, 24), slice(24, 32)  # the block: cell (2, 3) of a 6x6 grid of 8 px cells


def build_block_model() -> keras.Model:
    """Logits that depend only on the pixels in [ROWS, COLS], all increasing in their brightness.

    masked face -> 1x1 conv -> 8x8 max-pool (only cell (2, 3) is non-zero) ->
    1x1 conv "conv" (Grad-CAM's layer, 6x6) -> average -> logits. Positive
    weights and no biases make every feature >= 0 and every class prefer a
    brighter block.
    """
    mask = np.zeros((48, 48, 1), np.float32)
    mask[ROWS, COLS] = 1
    positive = keras.initializers.RandomUniform(0.1, 1.0, seed=0)
    face = keras.Input((48, 48, 1), name="face")
    x = keras.ops.multiply(keras.layers.Rescaling(1 / 255)(face), mask)
    x = keras.layers.Conv2D(4, 1, activation="relu", use_bias=False, kernel_initializer=positive)(x)
    x = keras.layers.MaxPooling2D(8)(x)  # (B, 6, 6, 4)
    x = keras.layers.Conv2D(4, 1, activation="relu", use_bias=False, kernel_initializer=positive, name="conv")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    logits = keras.layers.Dense(7, kernel_initializer=positive, name="logits")(x)
    return keras.Model(face, keras.layers.Activation("softmax", name="probs")(logits))
