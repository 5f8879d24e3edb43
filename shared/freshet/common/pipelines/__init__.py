"""Pipelines: declarative DAGs of operators over change events.

:mod:`~freshet.common.pipelines.spec` is the desired state (what control accepts and writes to
``freshet.control.pipelines``), :mod:`~freshet.common.pipelines.compiler` validates a spec
against the captured tables and compiles its expressions (control and transform both call it),
and :mod:`~freshet.common.pipelines.values` maps field values to and from change events.
Transform runs the compiled plan (``freshet.transform.pipelines``).
"""

from freshet.common.pipelines.compiler import (
    PipelineError,
    PipelinePlan,
    PlanNode,
    Problem,
    compile_pipeline,
)
from freshet.common.pipelines.spec import MASK_SHOWN, MaskNode, PipelineSpec

__all__ = [
    "MASK_SHOWN",
    "MaskNode",
    "PipelineError",
    "PipelinePlan",
    "PipelineSpec",
    "PlanNode",
    "Problem",
    "compile_pipeline",
]
