"""ISP-Net, CAS-Net and the other compression artifact simulators, constructible by name."""
from caisp.models.registry import build, names, register  # noqa: F401

# Importing the modules fills the registry.
from caisp.models import acn, blur, djs, kornia_jpeg, unet  # noqa: F401,E402
