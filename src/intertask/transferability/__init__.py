"""Transferability: which intermediate task will help a target, estimated before (or instead of)
training on it, and scored against the gains a study measured.

    scores   LogME, embedding similarity, NDCG@k, regret@k, rank correlation
    predict  `intertask predict`: the estimates per (model, intermediate, target) as a table and figure
"""
