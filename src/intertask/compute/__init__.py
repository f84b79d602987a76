"""The compute core: what runs a model; nothing of tracking, runs or studies.

hardware (device, precision, threads) and batching sit below the tasks; modeling (heads, saving,
loading), encoding (token caches), dropout, training (the loop), evaluation (scoring a set), adapters
(PEFT) and checkpoints (resumable state) above them. The stages that use them (one
tracked run each) live in `intertask.stages`.
"""
