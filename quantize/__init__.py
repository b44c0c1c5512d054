"""Int8 quantisation: drift reports, selective quantisation, QAT (installed as lhp_tf.quantize)."""
