"""The trading kernel: one step of trading (market events -> agents -> risk -> venue ->
reports -> rows) written once, and transported by every runner (``sapphire backtest`` in
process, ``sapphire run`` on Ray actors, tune trials). See ``sapphire.kernel.timing``."""
