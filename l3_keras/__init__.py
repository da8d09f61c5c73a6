"""L3-Net (Arandjelovic & Zisserman, "Look, Listen and Learn", ICCV 2017) in TensorFlow / Keras 3."""

__version__ = "0.1.0"
