"""Methods that live outside retext_jax (chosen with `--config.method=example_methods.<name>`),
to show that the trainer hosts any `retext_jax.methods.Method`."""
