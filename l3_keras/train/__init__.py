"""Training: strategy choice, fit (or the multi-worker loop), checkpoints and resume, run directories.

    find_inputs(data, ...) -> (Inputs, DataConfig)     videos or shards -> train / held-out shards
    train(run_dir, model_config, train_config, inputs) -> held-out results

Modules: run.py (one run), strategy.py, data.py, checkpoint.py, callbacks.py, loop.py (multi-worker
custom loop), rundir.py (run-directory layout), ceiling.py (best reachable accuracy on synthetic data).
"""
from l3_keras.train.run import Inputs, find_inputs, fit_model, make_optimizer, train

__all__ = ["Inputs", "find_inputs", "fit_model", "make_optimizer", "train"]
