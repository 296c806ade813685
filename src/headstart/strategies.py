"""The strategy ladder's names, importable without torch (the command line's help)."""

STRATEGIES: tuple[str, ...] = ("probe", "partial", "finetune", "gradual", "lp-ft", "scratch")
