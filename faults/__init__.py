"""The fault-injection suite (``make faults``): ``gpuprov ci`` cycles with faults at random points, then leak and secret checks."""
