"""Developer and CI scripts; a package so that tests can import their helpers (`scripts.tf_hcl`)."""
