"""Training, evaluation, metrics, speed, complexity and checkpoints: the engine the workflows call."""
