"""A partner's own pages of the site: its jobs, a submit form with the dry run's cost, its budget."""
