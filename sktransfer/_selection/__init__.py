"""Model selection and reporting: probes, searches, comparisons, plots."""
