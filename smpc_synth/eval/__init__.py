"""Quality evaluation of synthetic tables: fidelity, utility (TSTR), privacy (DCR), collapse."""

from smpc_synth.eval.format import format_report
from smpc_synth.eval.report import evaluate

__all__ = ["evaluate", "format_report"]
