"""Training and evaluation: the Lab cache (`data`), objectives (`losses`), the loop (`loop`),
metrics (`metrics`) and the `eval` report (`evaluate`).

    from bttf.training.loop import TrainConfig, train
    from bttf.training.data import PrepareConfig, prepare
    from bttf.training.evaluate import EvalConfig, evaluate
"""
