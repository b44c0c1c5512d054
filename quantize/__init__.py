"""Int8 quantisation: drift reports, mixed int8/int16 precision, QAT (installed as lhp_tf.quantize)."""
