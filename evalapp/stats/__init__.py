"""Pure statistics for EmpathEval (no Django): agreement, icc, comparison, text.

Submodules are imported explicitly (e.g. ``from evalapp.stats import agreement``)
so that importing the package does not load statsmodels or sacrebleu.
"""
