"""Reading and rendering run records (`baton runs`, `baton show`)."""
