"""Model-server integrations. Core code never imports these (checked by import-linter)."""
