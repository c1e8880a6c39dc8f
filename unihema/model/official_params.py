"""The official Uni-Hema parameter inventory: trainable tensor name -> number of elements.

The numbers are data, so they live in ``official_params.json`` beside this module (shipped as
package data): a verbatim copy of the release facts (../shared/reference/unihema-official/
params.json: 727 tensors, 301,808,544 parameters, counted over ``requires_grad`` parameters as
the DINO code does), in release order, so the summary and the converter can check against it
wherever the package is installed; tests/model compare it with the shared file when present.
"""

from __future__ import annotations

import json
from importlib import resources

OFFICIAL_PARAMS: dict[str, int] = json.loads(
    resources.files(__package__).joinpath("official_params.json").read_text(encoding="utf-8")
)
