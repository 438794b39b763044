"""The live web console's data: a typed snapshot of the coordinator's own state (no Ray here;
the server is ``actors.console``)."""
