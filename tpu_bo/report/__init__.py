"""What a study reports: observers behind one interface, the console, TensorBoard, plots, summary.

:class:`Observer` is the interface the loop calls (:class:`Observers` calls several); the console
table (:class:`Console`), TensorBoard (:class:`TensorBoard`) and ``summary.png``
(:class:`SummaryPlot`) implement it. ``tpu_bo.report.summary`` builds ``summary.json``.
"""

from tpu_bo._lazy import exports

__all__ = ["Console", "Observer", "Observers", "Reporter", "SummaryPlot", "TensorBoard"]
__getattr__, __dir__ = exports(
    __name__,
    {
        "Console": "console",
        "Observer": "observers",
        "Observers": "observers",
        "Reporter": "console",
        "SummaryPlot": "plots",
        "TensorBoard": "tensorboard",
    },
)
