"""pruning-study: the library behind a reproducible study of CNN pruning strategies.

Modules, one job each:

- ``helpers.data``: every dataset of the study as in-memory uint8 tensors, and tensor transforms.
- ``helpers.models``: the CNNs of the study (torchvision VGG16 / VGG16-BN / ResNet18 / ResNet50).
- ``helpers.pruning``: scenarios, the pruning methods, sparsity reports and physical compaction.
"""

__version__ = "0.1.0"
