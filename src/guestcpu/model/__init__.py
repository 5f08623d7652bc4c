"""Value types: CPUID data, CPU definitions, catalog features and models."""
