"""Smart routing: rules, task routing, learned strong-vs-weak routing, feedback."""
