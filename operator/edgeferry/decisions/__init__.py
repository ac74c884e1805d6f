"""Pure decision logic: what to build, whether to admit, which targets go in the next wave. No I/O."""
