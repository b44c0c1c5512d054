"""Datasets: WFLW and 300W readers, synthetic faces, and the tf.data pipeline."""
