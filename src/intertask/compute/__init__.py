"""The compute core: what runs a model, and nothing about MLflow runs or studies.

hardware (device, precision, threads) and batching sit below the tasks; modeling (heads, saving,
loading), encoding (token caches), dropout, training (the loop), evaluation (scoring a set), adapters
(PEFT) and checkpoints (resumable state) above them. The MLflow-run stages that use them live in
`intertask.stages`.
"""
