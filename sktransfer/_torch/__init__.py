"""Pure torch functions over modules: layers, heads, the default network."""
