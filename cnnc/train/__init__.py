"""Training: the fit loop, evaluation, metrics, learning-rate schedules, callbacks,
checkpoints, and the ``cnnc run | evaluate | predict`` commands.

    from cnnc.train import fit, evaluate, EarlyStopping, Checkpoints
    history = fit(model, (x, y), epochs=10, batch_size=32, validation_split=0.2,
                  callbacks=[EarlyStopping(patience=3), Checkpoints("runs/x")])

The model only needs the small protocol in :mod:`cnnc.train.protocol`.
"""
from cnnc.train.callbacks import (Callback, Checkpoints, CurvesPlot, EarlyStopping,
                                  HistoryFiles, JsonLines, ProgressBar)
from cnnc.train.checkpoint import Checkpoint, read_checkpoint, save_checkpoint
from cnnc.train.fit import (History, TrainingDiverged, TrainingInterrupted, TrainState,
                            evaluate, fit)
from cnnc.train.metrics import make_metrics
from cnnc.train.protocol import ReportsOutputs, Seeded, TrainableModel
from cnnc.train.schedules import (Constant, Cosine, Exponential, MultiStep, ReduceOnPlateau,
                                  Schedule, StepDecay, Warmup, make_schedule)

__all__ = [
    "Callback", "Checkpoint", "Checkpoints", "Constant", "Cosine", "CurvesPlot",
    "EarlyStopping", "Exponential", "History", "HistoryFiles", "JsonLines", "MultiStep",
    "ProgressBar", "ReduceOnPlateau", "ReportsOutputs", "Schedule", "Seeded", "StepDecay",
    "TrainState", "TrainableModel", "TrainingDiverged", "TrainingInterrupted", "Warmup",
    "evaluate", "fit", "make_metrics", "make_schedule", "read_checkpoint", "save_checkpoint",
]
