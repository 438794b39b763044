"""Starting points copied by ``sapphire new-agent NAME``: a tick agent and a bar strategy.

They are real, type-checked modules (the tests run both), so a template cannot rot; the
command copies one beside a runnable config and renames its class.
"""
