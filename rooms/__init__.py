"""Pure room logic, no I/O: room versions, the event format, redaction, authorisation
rules, state resolution, power levels, join rules and history visibility."""
