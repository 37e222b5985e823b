"""The headless rack: YAML configs (``config``: schema, validation with file:line:column,
JSON Schema), the state folder (``statefolder``: its lock, the saved ids in rack.json, checked
before use) and supervision (``supervisor``: one process per device, restarts, persistence,
reload, the control socket behind ``status``). May import adapters and the transport;
never the CLI.
"""
