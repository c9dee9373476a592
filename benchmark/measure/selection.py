"""Which registered models a benchmark takes by default: those that declare a kernel op
(``register_model(ops=...)``), so that no benchmark names a model."""
from __future__ import annotations

import models


def paper_size_models(*ops: str) -> list[str]:
    """The paper-size presets (a family's own name) that declare any of ``ops`` (any kernel op when
    none is given), sorted."""
    return [n for n in models.list_models() if models.model_info(n).family == n
            and (set(models.model_info(n).ops) & set(ops) if ops else models.model_info(n).ops)]
