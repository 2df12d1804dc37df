"""The rport agent: connects out to rportd and serves its plugins."""
