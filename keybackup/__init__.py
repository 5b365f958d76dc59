"""Key backup: the rule for which session key the server keeps, its storage and servlets;
and the user's side (recovery-key codec, the backup algorithm, the restore command)."""
