"""Review outputs of the lineage: the terminal tree, graph exports, the HTML report and progress plot."""
from coordinator.review.report.export import FORMATS, ExportError, write_graph
from coordinator.review.report.html import ReportError, build_report
from coordinator.review.report.tree import TreeError, render_tree

__all__ = ["render_tree", "write_graph", "build_report", "FORMATS", "ReportError",
           "ExportError", "TreeError"]
