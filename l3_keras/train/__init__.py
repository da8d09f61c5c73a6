"""Training: strategy choice, fit (or the multi-worker loop), checkpoints and resume, run directories.

    find_inputs(data, ...) -> Inputs              videos or shards -> train / held-out shard files
    train(run_dir, model_config, train_config, inputs) -> (model, held-out results)

Modules: run.py (one run), state.py (the run's state), strategy.py, data.py (inputs), checkpoint.py,
callbacks.py, loop.py (multi-worker custom loop), rundir.py (run-directory layout), recipe.py (the
`l3 train` command's function).
"""
from l3_keras.train.data import Inputs, find_inputs
from l3_keras.train.run import make_optimizer, train

__all__ = ["Inputs", "find_inputs", "make_optimizer", "train"]
