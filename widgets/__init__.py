"""ipywidgets and Panel dashboards for cavelab (later issues)."""
