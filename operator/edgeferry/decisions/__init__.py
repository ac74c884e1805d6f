"""Pure decision logic: what to build, whether to admit, which targets go next. No I/O."""
