"""The Keras backend: Keras 3 models run on Keras' torch backend, tapped like torch modules."""
