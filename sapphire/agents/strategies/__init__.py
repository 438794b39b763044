"""Example freqtrade-style strategies (executed by the tests and the example configs)."""
