"""A study from its YAML to its report: the grid of cells and their stages, where stages run, what makes
two stages the same, and the report's inputs gathered from what ran.

    pipeline   `intertask main`: preflight checks, plan, parent and arm runs, reuse, notices, the report
    grid       grid -> cells -> stage jobs with content keys; which evaluation a cell's head fits
    executors  in-process and Ray executors, claims, stalls
    identity   content hashes, code version, model identity, stage kinds, cell tags
    workspace  what a process's stages share (data, experiment, scratch); no torch
    collect    the report's inputs from a study's outcomes (in memory) or from stored runs

Importing this package imports none of them (a re-run of a finished study stays light).
"""
