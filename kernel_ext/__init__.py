"""IPython extension connecting notebooks to the cavelab engine."""
