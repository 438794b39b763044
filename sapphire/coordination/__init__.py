"""The coordinator's pure core: order journal, routing of agent outputs through risk."""
