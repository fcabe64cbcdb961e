"""The operators' console: pages of the results site (`/site/console/`) over the same domain services
the operators' API and CLI call. Only an operator's session opens them; to anyone else they are
pages that do not exist."""
