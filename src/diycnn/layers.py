"""Keras-style layers for `diycnn.Sequential` (re-exported from diycnn.models.layers)."""

from .models.layers import (
                            Activation,
                            AveragePooling2D,
                            BatchNormalization,
                            Conv2D,
                            Dense,
                            Dropout,
                            Flatten,
                            GlobalAveragePooling2D,
                            Input,
                            Layer,
                            MaxPooling2D,
                            Rescaling,
)

__all__ = ["Activation", "AveragePooling2D", "BatchNormalization", "Conv2D", "Dense", "Dropout", "Flatten",
           "GlobalAveragePooling2D", "Input", "Layer", "MaxPooling2D", "Rescaling"]
