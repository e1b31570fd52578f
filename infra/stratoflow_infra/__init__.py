"""The stratoflow CDK app: one stack composed of small constructs, one module each."""
