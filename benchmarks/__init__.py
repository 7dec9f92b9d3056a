"""Side-by-side measurements of studyhall against plain Optuna + Keras and KerasTuner.

``python -m benchmarks all`` runs every comparison; see RESULTS.md for the latest figures.
"""
