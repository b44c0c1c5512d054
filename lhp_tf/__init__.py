"""lhp-tf: Lite-HRNet Plus facial landmark detection in Keras/TensorFlow.

Importing this package must not import TensorFlow: the device-side modules
(``lhp_tf.bench``, ``lhp_tf.runtime``, ``lhp_tf.metrics``, ``lhp_tf.decode``)
run on boards that only have numpy and a TFLite interpreter.
"""

__version__ = "0.1.0"
