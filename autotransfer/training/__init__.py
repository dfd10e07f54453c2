"""One trial's training: the trainer ladder, the one batched-inference loop, the caches a search
owns, and the GPU memory model. Nothing here knows Optuna or the study."""
