"""Conversion of trained checkpoints to TFLite, ONNX and SavedModel (installed as lhp_tf.converters)."""
