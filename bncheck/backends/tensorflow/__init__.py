"""TensorFlow graphs: converted to ONNX in memory with tf2onnx, then the ONNX backend's."""
